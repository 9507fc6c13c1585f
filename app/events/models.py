"""Each user's events in order (order accepted, trade recorded, transfer step, site fault ...).

Written in the same transaction as the change they describe, so the live stream never misses one; the
id is the stream's event id (`Last-Event-ID` resumes after it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from common.dbtypes import utc_column


class UserEvent(SQLModel, table=True):
    __tablename__ = "user_events"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    kind: str = Field(max_length=40)
    at: datetime = Field(sa_column=utc_column(nullable=False))
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
