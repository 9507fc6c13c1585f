"""The indexed KIP-7 Transfer events of the energy coin and the indexer's checkpoint."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.core.db import BigAmount
from common.dbtypes import utc_column


class TransferEvent(SQLModel, table=True):
    """A KIP-7 Transfer log, stored once per (tx hash, log index)."""

    __tablename__ = "transfer_events"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_transfer_event"),)

    id: int | None = Field(default=None, primary_key=True)
    block_number: int = Field(index=True)
    block_hash: str = Field(max_length=66)
    tx_hash: str = Field(max_length=66)
    log_index: int
    from_address: str = Field(max_length=42, index=True)
    to_address: str = Field(max_length=42, index=True)
    value: int = Field(sa_column=Column(BigAmount, nullable=False))
    block_time: datetime | None = Field(default=None, sa_column=utc_column())


class IndexerCheckpoint(SQLModel, table=True):
    __tablename__ = "indexer_checkpoints"

    name: str = Field(primary_key=True, max_length=64)
    block_number: int
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))
