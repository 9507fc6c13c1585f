"""Sites: registration, status, readings, faults, slot energies, proofs and the supply estimate."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, status

from app.api.deps import SessionDep, SettingsDep
from app.api.params import RowId, UtcTime
from app.coin.service import latest_hash
from app.core.errors import BadRequest
from app.sites import repository, service
from app.sites.errors import NotAnchoredYet
from app.sites.schemas import (
    EventPublic,
    FaultPublic,
    LedgerSlotPublic,
    ProofPublic,
    ReadingPublic,
    SiteCreate,
    SiteDetail,
    SitePublic,
    SlotPublic,
    SupplyPublic,
)
from app.users.deps import AdminUser, CurrentUser
from app.users.models import Role
from ess_collector.anchoring import NotAnchored, energies_of, hex0x, proof_for, unix

router = APIRouter(prefix="/sites", tags=["sites"])
admin_router = APIRouter(prefix="/admin/sites", tags=["admin"])
ledger_router = APIRouter(prefix="/ledger", tags=["ledger"])

From = Query(None, alias="from", description="inclusive, ISO 8601")
To = Query(None, alias="to", description="exclusive, ISO 8601")


def _window(since: datetime | None, until: datetime | None) -> None:
    for t in (since, until):
        if t is not None and t.tzinfo is None:
            raise BadRequest("times need a time zone (e.g. 2025-06-01T00:00:00Z)")
    if since is not None and until is not None and until <= since:
        raise BadRequest("`to` must be after `from`")


@router.post(
    "",
    summary="Register an ESS site (battery, inverter, meter) to be polled",
    response_model=SitePublic,
    status_code=status.HTTP_201_CREATED,
)
def register_site(
    data: SiteCreate, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> SitePublic:
    return service.to_public(service.register_site(session, settings, user, data))


@router.get("", summary="Your sites (all sites for admins)", response_model=list[SitePublic])
def list_sites(session: SessionDep, user: CurrentUser) -> list[SitePublic]:
    return [service.to_public(s) for s in service.visible_sites(session, user)]


@router.get("/{site_id}", summary="One site with its last reading and open faults", response_model=SiteDetail)
def get_site(site_id: RowId, session: SessionDep, user: CurrentUser) -> SiteDetail:
    site = service.get_site(session, user, site_id)
    return SiteDetail(
        **service.to_public(site).model_dump(),
        last_reading=repository.last_reading(session, site_id, with_cause=user.role == Role.admin),
        open_faults=repository.faults(session, site_id, only_open=True),
    )


@router.get("/{site_id}/readings", summary="A site's readings", response_model=list[ReadingPublic])
def get_readings(
    site_id: RowId,
    session: SessionDep,
    user: CurrentUser,
    limit: int = Query(100, ge=1, le=5000),
    since: UtcTime | None = From,
    until: UtcTime | None = To,
) -> list[ReadingPublic]:
    service.get_site(session, user, site_id)
    _window(since, until)
    return repository.readings(session, site_id, limit, since, until, with_cause=user.role == Role.admin)


@router.get("/{site_id}/faults", summary="A site's faults", response_model=list[FaultPublic])
def get_faults(
    site_id: RowId,
    session: SessionDep,
    user: CurrentUser,
    open: bool = Query(False, description="only faults that are still open"),
    limit: int = Query(100, ge=1, le=1000),
) -> list[FaultPublic]:
    service.get_site(session, user, site_id)
    return repository.faults(session, site_id, only_open=open, limit=limit)


@router.get("/{site_id}/events", summary="A site's events", response_model=list[EventPublic])
def get_events(
    site_id: RowId, session: SessionDep, user: CurrentUser, limit: int = Query(100, ge=1, le=1000)
) -> list[EventPublic]:
    service.get_site(session, user, site_id)
    return repository.events(session, site_id, limit)


@router.get("/{site_id}/slots", summary="A site's slot energies", response_model=list[SlotPublic])
def get_slots(
    site_id: RowId,
    session: SessionDep,
    user: CurrentUser,
    since: UtcTime | None = From,
    until: UtcTime | None = To,
    limit: int = Query(96, ge=1, le=3000),
) -> list[SlotPublic]:
    service.get_site(session, user, site_id)
    _window(since, until)
    return repository.slots(session, site_id, since, until, limit)


@router.get(
    "/{site_id}/slots/{slot_start}/proof",
    summary="The Merkle proof of a site's anchored slot",
    response_model=ProofPublic,
)
def get_proof(
    site_id: RowId, slot_start: str, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> ProofPublic:
    service.get_site(session, user, site_id)
    start = service.parse_slot_start(slot_start, settings.slot_minutes)
    try:
        p = proof_for(session, site_id, start)
    except NotAnchored as exc:
        raise NotAnchoredYet(str(exc)) from None
    return ProofPublic(
        site_id=site_id,
        slot_start=start,
        slot_start_unix=unix(start),
        energies_wh=list(energies_of(p.record)),
        leaf=hex0x(p.leaf),
        proof=[hex0x(x) for x in p.path],
        root=p.ledger.root or "",
        contract=p.ledger.contract,
        ledger_status=p.ledger.status,
    )


@router.get("/{site_id}/supply", summary="What a site can deliver in a slot", response_model=SupplyPublic)
def get_supply(
    site_id: RowId,
    session: SessionDep,
    user: CurrentUser,
    settings: SettingsDep,
    slot_start: str = Query(description="unix seconds or ISO 8601; the start of a slot"),
) -> SupplyPublic:
    site = service.get_site(session, user, site_id)
    start = service.parse_slot_start(slot_start, settings.slot_minutes)
    return service.supply_public(service.estimate_supply(session, site, start, settings))


@admin_router.post("/{site_id}/disable", summary="Stop polling a site (admin)", response_model=SitePublic)
def disable_site(site_id: RowId, session: SessionDep, admin: AdminUser) -> SitePublic:
    site = service.get_site(session, admin, site_id)
    return service.to_public(service.set_enabled(session, admin, site, False))


@admin_router.post("/{site_id}/enable", summary="Poll a site again (admin)", response_model=SitePublic)
def enable_site(site_id: RowId, session: SessionDep, admin: AdminUser) -> SitePublic:
    site = service.get_site(session, admin, site_id)
    return service.to_public(service.set_enabled(session, admin, site, True))


@ledger_router.get(
    "/slots", summary="The meter ledger's slot records, newest first", response_model=list[LedgerSlotPublic]
)
def list_ledger_slots(
    session: SessionDep,
    from_: UtcTime | None = Query(None, alias="from"),
    to: UtcTime | None = Query(None),
    limit: int = Query(96, ge=1, le=1000),
) -> list[LedgerSlotPublic]:
    """The slots' ledger records (anchored, submitted, empty or failed), newest first."""
    out = []
    for record in repository.ledger_slots(session, from_, to, limit):
        public = repository.ledger_public(record)
        if public.tx_hash is None and record.tx_id is not None:
            public.tx_hash = latest_hash(session, record.tx_id)
        out.append(public)
    return out


@ledger_router.get(
    "/slots/{slot_start}", summary="The meter ledger's record of one slot", response_model=LedgerSlotPublic
)
def get_ledger_slot(slot_start: str, session: SessionDep, settings: SettingsDep) -> LedgerSlotPublic:
    start = service.parse_slot_start(slot_start, settings.slot_minutes)
    record = repository.ledger_slot(session, start)
    if record is None:
        raise NotAnchoredYet(f"slot {start.isoformat()} has no ledger record yet")
    public = repository.ledger_public(record)
    if public.tx_hash is None and record.tx_id is not None:
        public.tx_hash = latest_hash(session, record.tx_id)  # submitted: the newest signed attempt
    return public
