"""Every query behind the sites and ledger views, shaped into their response models."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypeVar

from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from app.sites.schemas import EventPublic, FaultPublic, LedgerSlotPublic, ReadingPublic, SlotPublic
from ess_collector.models import LedgerSlot, SiteEvent, SiteFault, SiteReading, SlotEnergy
from ess_collector.validation import ENERGY

UNANSWERED = "no valid answer from the device"  # what an owner reads for any failed poll or probe

Row = TypeVar("Row")


def _window(
    query: SelectOfScalar[Row], column: Any, since: datetime | None, until: datetime | None
) -> SelectOfScalar[Row]:
    """``query`` limited to ``since`` (inclusive) .. ``until`` (exclusive) on ``column``, either open."""
    if since is not None:
        query = query.where(col(column) >= since)
    if until is not None:
        query = query.where(col(column) < until)
    return query


def reading_public(r: SiteReading, *, with_cause: bool = True) -> ReadingPublic:
    """``with_cause=False`` (owners): a poll the device did not answer says only that, never why: the
    cause (refused, timed out, something else listening) would make a site a port scanner."""
    unanswered = r.quality == "missing" and r.heartbeat is None and r.device_time is None
    return ReadingPublic(
        ts=r.ts,
        quality=r.quality,
        detail=UNANSWERED if unanswered and not with_cause else r.detail,
        pv_w=r.pv_w,
        load_w=r.load_w,
        grid_w=r.grid_w,
        battery_w=r.battery_w,
        soc_pct=None if r.soc_tenths is None else r.soc_tenths / 10,
        **{f: getattr(r, f) for f in ENERGY},
    )


def readings(
    session: Session,
    site_id: int,
    limit: int,
    since: datetime | None,
    until: datetime | None,
    *,
    with_cause: bool = True,
) -> list[ReadingPublic]:
    """Newest first; ``since`` inclusive, ``until`` exclusive."""
    query = _window(
        select(SiteReading).where(col(SiteReading.site_id) == site_id), SiteReading.ts, since, until
    )
    rows = session.exec(query.order_by(col(SiteReading.ts).desc(), col(SiteReading.id).desc()).limit(limit))
    return [reading_public(r, with_cause=with_cause) for r in rows.all()]


def last_reading(session: Session, site_id: int, *, with_cause: bool = True) -> ReadingPublic | None:
    found = readings(session, site_id, 1, None, None, with_cause=with_cause)
    return found[0] if found else None


def faults(session: Session, site_id: int, *, only_open: bool = False, limit: int = 100) -> list[FaultPublic]:
    query = select(SiteFault).where(col(SiteFault.site_id) == site_id)
    if only_open:
        query = query.where(col(SiteFault.closed_at).is_(None))
    rows = session.exec(
        query.order_by(col(SiteFault.opened_at).desc(), col(SiteFault.id).desc()).limit(limit)
    )
    return [
        FaultPublic(id=r.id or 0, kind=r.kind, detail=r.detail, opened_at=r.opened_at, closed_at=r.closed_at)
        for r in rows.all()
    ]


def events(session: Session, site_id: int, limit: int) -> list[EventPublic]:
    rows = session.exec(
        select(SiteEvent)
        .where(col(SiteEvent.site_id) == site_id)
        .order_by(col(SiteEvent.ts).desc(), col(SiteEvent.id).desc())
        .limit(limit)
    ).all()
    out = []
    for e in rows:
        try:
            detail = json.loads(e.detail) if e.detail else None
        except ValueError:
            detail = e.detail
        out.append(EventPublic(ts=e.ts, kind=e.kind, detail=detail))
    return out


def slot_public(r: SlotEnergy) -> SlotPublic:
    def stats(name: str) -> dict[str, int | None]:
        return {k: getattr(r, f"{name}_{k}") for k in ("min", "avg", "max")}

    return SlotPublic(
        slot_start=r.slot_start,
        slot_minutes=r.slot_minutes,
        status=r.status,
        completeness=round(min(1.0, r.good_polls / r.expected_polls), 3) if r.expected_polls else 0.0,
        good_polls=r.good_polls,
        expected_polls=r.expected_polls,
        **{f: getattr(r, f) for f in ENERGY},
        pv_w=stats("pv_w"),
        load_w=stats("load_w"),
        grid_w=stats("grid_w"),
        battery_w=stats("battery_w"),
        soc_start_pct=None if r.soc_start_tenths is None else r.soc_start_tenths / 10,
        soc_end_pct=None if r.soc_end_tenths is None else r.soc_end_tenths / 10,
        anchored=r.leaf is not None,
    )


def slots(
    session: Session, site_id: int, since: datetime | None, until: datetime | None, limit: int
) -> list[SlotPublic]:
    """Oldest first within the window (slot starts: ``since`` inclusive, ``until`` exclusive)."""
    query = _window(
        select(SlotEnergy).where(col(SlotEnergy.site_id) == site_id), SlotEnergy.slot_start, since, until
    )
    if since is None:  # no lower bound: the newest `limit` slots, still returned oldest first
        rows = list(session.exec(query.order_by(col(SlotEnergy.slot_start).desc()).limit(limit)).all())
        rows.reverse()
    else:
        rows = list(session.exec(query.order_by(col(SlotEnergy.slot_start)).limit(limit)).all())
    return [slot_public(r) for r in rows]


def ledger_slot(session: Session, slot_start: datetime) -> LedgerSlot | None:
    return session.exec(select(LedgerSlot).where(col(LedgerSlot.slot_start) == slot_start)).first()


def ledger_slots(
    session: Session, start: datetime | None, end: datetime | None, limit: int
) -> list[LedgerSlot]:
    """Newest first."""
    query = select(LedgerSlot).order_by(col(LedgerSlot.slot_start).desc()).limit(limit)
    if start is not None:
        query = query.where(col(LedgerSlot.slot_start) >= start)
    if end is not None:
        query = query.where(col(LedgerSlot.slot_start) < end)
    return list(session.exec(query).all())


def ledger_public(r: LedgerSlot) -> LedgerSlotPublic:
    return LedgerSlotPublic(
        slot_start=r.slot_start,
        slot_start_unix=int(r.slot_start.timestamp()),
        slot_minutes=r.slot_minutes,
        status=r.status,
        root=r.root,
        count=r.count,
        totals_wh={f: getattr(r, f) for f in ENERGY},
        contract=r.contract,
        tx_hash=r.tx_hash,
        block_number=r.block_number,
        error=r.error,
    )
