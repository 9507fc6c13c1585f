"""The append-only, hash-chained audit log of admin actions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from common.dbtypes import utc_column


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    seq: int = Field(primary_key=True)  # 1, 2, 3 ... allocated under the head row's lock
    at: datetime = Field(sa_column=utc_column(nullable=False))
    actor_id: int | None = Field(default=None, index=True)
    actor_email: str | None = Field(default=None, max_length=320)
    action: str = Field(max_length=64, index=True)
    target: str | None = Field(default=None, max_length=200)
    details: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outcome: str = Field(max_length=32)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """One row: the last sequence number and hash. Updating it first serialises appends."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = Field(default="0" * 64, max_length=64)
