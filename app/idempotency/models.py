"""Idempotency records: same key and body replays the first answer."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from common.dbtypes import utc_column


class IdempotencyState(enum.StrEnum):
    in_progress = "in_progress"
    done = "done"


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=120)  # user id + route: keys are per user and per route
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)
    state: str = Field(max_length=16)  # IdempotencyState
    resource: str | None = Field(default=None, max_length=120)  # e.g. "coin_operation:12"
    response_status: int | None = None
    response_body: dict | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    lease_until: datetime = Field(sa_column=utc_column(nullable=False))
