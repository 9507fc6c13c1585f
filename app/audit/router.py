"""The admin's view of the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Query

from app.api.deps import SessionDep
from app.api.params import RowId
from app.audit import service
from app.audit.schemas import AuditEntryPublic, AuditPage
from app.users.deps import AdminUser

router = APIRouter(prefix="/admin/audit", tags=["admin"])


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
