from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from app.api.deps import SessionDep
from app.api.params import RowId
from app.audit import service
from app.users.deps import AdminUser

router = APIRouter(prefix="/admin/audit", tags=["admin"])


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


@router.get(
    "", summary="The audit log, newest first, with a check of its hash chain", response_model=AuditPage
)
def list_audit(
    session: SessionDep,
    _admin: AdminUser,
    limit: int = Query(100, ge=1, le=1000),
    before: RowId | None = None,
) -> AuditPage:
    intact, broken = service.verify(session)
    items = [
        AuditEntryPublic.model_validate(e, from_attributes=True)
        for e in service.list_entries(session, limit, before)
    ]
    return AuditPage(items=items, chain_intact=intact, first_broken_seq=broken)
