"""Coin transfers and their ordered, append-only steps."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.spending.holds import Hold, register
from common.dbtypes import BigAmount, utc_column


class TransferStatus(enum.StrEnum):
    """pending_authorization -> authorized -> submitted -> confirmed | failed (the API shows `authorized`
    as `submitted`: the batcher relays it within a moment)."""

    pending_authorization = "pending_authorization"
    authorized = "authorized"
    submitted = "submitted"
    confirmed = "confirmed"
    failed = "failed"


class StepKind(enum.StrEnum):
    """The steps a transfer records, in the order they happen (requeued: its batch failed, it waits again)."""

    requested = "requested"
    challenge_issued = "challenge_issued"
    authorized = "authorized"
    signed = "signed"
    submitted = "submitted"
    requeued = "requeued"
    mined = "mined"
    confirmed = "confirmed"
    failed = "failed"


class Transfer(SQLModel, table=True):
    __tablename__ = "transfers"
    # the spending check sums a wallet's authorised transfers (app/spending/holds.py); the first column
    # also serves every other lookup by sender
    __table_args__ = (Index("ix_transfers_from_status", "from_address", "status"),)

    id: str = Field(primary_key=True, max_length=32)  # uuid4 hex; the ERC-3009 nonce derives from it
    user_id: int = Field(foreign_key="users.id", index=True)
    wallet_kind: str = Field(max_length=16)  # WalletKind
    from_address: str = Field(max_length=42)  # indexed with the status, above
    to_address: str = Field(max_length=42, index=True)
    to_user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    amount: int = Field(sa_column=Column(BigAmount, nullable=False))
    memo: str | None = Field(default=None, max_length=500)
    status: str = Field(max_length=24, index=True)  # TransferStatus
    nonce: str = Field(max_length=66)
    valid_after: int
    valid_before: int
    typed_data: dict = Field(sa_column=Column(JSON, nullable=False))
    signature: str | None = Field(default=None, max_length=140)
    tx_id: int | None = Field(default=None, foreign_key="outgoing_tx.id")
    failure_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


# An authorised transfer holds its coins until it is mined (app/spending/holds.py).
register(
    Hold(
        Transfer.amount,
        Transfer.from_address,
        Transfer.status,
        (TransferStatus.authorized, TransferStatus.submitted),
        spent=(TransferStatus.confirmed,),
        changed_at=Transfer.updated_at,  # stamped when the batch's receipt marks it confirmed
    )
)


class TransferStep(SQLModel, table=True):
    __tablename__ = "transfer_steps"
    __table_args__ = (UniqueConstraint("transfer_id", "seq", name="uq_transfer_step"),)

    id: int | None = Field(default=None, primary_key=True)
    transfer_id: str = Field(foreign_key="transfers.id", index=True, max_length=32)
    seq: int
    kind: str = Field(max_length=32)  # StepKind
    at: datetime = Field(sa_column=utc_column(nullable=False))
    details: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
