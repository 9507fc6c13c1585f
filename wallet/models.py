"""The relayer's own tables: nonce counters and every outgoing transaction with its signed bytes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from common.dbtypes import BigAmount, utc_column


class NonceCounter(SQLModel, table=True):
    """We own our nonces: allocated in the same database transaction as the outgoing transaction row."""

    __tablename__ = "nonce_counters"

    chain_id: int = Field(primary_key=True)
    address: str = Field(primary_key=True, max_length=42)
    next_nonce: int


class OutgoingTx(SQLModel, table=True):
    __tablename__ = "outgoing_tx"
    __table_args__ = (UniqueConstraint("chain_id", "sender", "nonce", name="uq_outgoing_nonce"),)

    id: int | None = Field(default=None, primary_key=True)
    chain_id: int
    sender: str = Field(max_length=42, index=True)
    nonce: int
    to: str | None = Field(default=None, max_length=42)
    data: str = Field(sa_column=Column(Text, nullable=False))
    value: int = Field(default=0, sa_column=Column(BigAmount, nullable=False))
    gas: int
    purpose: str = Field(max_length=120)
    # pending -> sent -> confirmed (mined, deep enough) | failed (reverted or dropped); replaced attempts stay in TxAttempt
    status: str = Field(max_length=16, index=True)
    tx_hash: str | None = Field(default=None, max_length=66, index=True)  # the hash that got mined
    block_number: int | None = None
    block_hash: str | None = Field(default=None, max_length=66)
    gas_used: int | None = None
    error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


class TxAttempt(SQLModel, table=True):
    """Each signed version of an outgoing transaction (the first, then fee-bumped replacements)."""

    __tablename__ = "tx_attempts"

    id: int | None = Field(default=None, primary_key=True)
    tx_id: int = Field(foreign_key="outgoing_tx.id", index=True)
    tx_hash: str = Field(max_length=66, unique=True)
    raw: str = Field(sa_column=Column(Text, nullable=False))  # signed bytes, stored before broadcast
    max_fee_per_gas: int = Field(sa_column=Column(BigAmount, nullable=False))
    max_priority_fee_per_gas: int = Field(sa_column=Column(BigAmount, nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=utc_column())
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
