"""The audit log as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEntryPublic(BaseModel):
    seq: int
    at: datetime
    actor_id: int | None
    actor_email: str | None
    action: str
    target: str | None
    details: dict[str, Any]
    outcome: str
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEntryPublic]
    chain_intact: bool
    first_broken_seq: int | None
