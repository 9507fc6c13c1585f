"""Slot energies: each site's accepted counter deltas apportioned to UTC-aligned slots.

Every accepted reading carries the energy since the previous accepted one (its interval). A slot's energy
is the sum of the intervals inside it; an interval crossing a slot boundary is split by time, but only when
it is short (``max_gap_s``): a long one (an outage, a frozen device, a collector restart across the
boundary) cannot say which slot its energy belongs to, so both slots become ``incomplete`` rather than
receive a guess. Integer splits give the remainder to the later slot, so no Wh is created or lost.

Status: ``complete`` when the accepted intervals tile the slot and enough polls were good;
``recovered`` when they tile it but polls were missing (the counters bracket the gap, so the energy is
measured, not estimated); ``incomplete`` otherwise (energies then cover only the measured part, or are
null when nothing was measured) - incomplete slots stay out of settlement and off chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import func, insert
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from common.lease import Lease
from ess_collector.config import CollectorConfig
from ess_collector.models import Site, SiteReading, SlotEnergy, SlotStatus
from ess_collector.validation import ENERGY

POWERS = ("pv_w", "load_w", "grid_w", "battery_w")
MAX_SLOTS_PER_RUN = 96  # a long catch-up proceeds in bounded steps


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime
    deltas: tuple[int, ...]


@dataclass(frozen=True)
class Sample:
    ts: datetime
    quality: str
    powers: tuple[int | None, ...]  # POWERS order
    soc_tenths: int | None


@dataclass
class SlotResult:
    status: str
    good_polls: int
    expected_polls: int
    energies: tuple[int, ...] | None
    power_stats: dict[str, int | None] = field(default_factory=dict)
    soc_start_tenths: int | None = None
    soc_end_tenths: int | None = None


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)


def compute_slot(
    slot_start: datetime, cfg: CollectorConfig, intervals: Sequence[Interval], samples: Sequence[Sample]
) -> SlotResult:
    """One site's slot from its accepted intervals (any that may overlap) and its samples."""
    s, e = _us(slot_start), _us(slot_start + cfg.slot)
    max_gap = round(cfg.max_gap_s * 1_000_000)
    relevant = sorted((iv for iv in intervals if _us(iv.end) > s and _us(iv.start) < e), key=lambda i: i.end)
    energy = [0] * len(ENERGY)
    measured = False
    tiled = bool(relevant) and _us(relevant[0].start) <= s and _us(relevant[-1].end) >= e
    for prev, nxt in pairwise(relevant):
        if abs(_us(nxt.start) - _us(prev.end)) > 1000:  # a re-baseline left a hole in between
            tiled = False
    for iv in relevant:
        a, b = _us(iv.start), _us(iv.end)
        length = b - a
        if a >= s and b <= e:
            share = list(iv.deltas)
        elif length > max_gap or (a < s and b > e):
            tiled = False  # where inside this interval the energy flowed is unknown
            continue
        elif a < s:
            share = [d - d * (s - a) // length for d in iv.deltas]
        else:
            share = [d * (e - a) // length for d in iv.deltas]
        energy = [x + y for x, y in zip(energy, share, strict=True)]
        measured = True

    inside = [p for p in samples if s <= _us(p.ts) < e]
    good = [p for p in inside if p.quality == "ok"]
    expected = cfg.expected_polls
    status = SlotStatus.incomplete
    if tiled:
        status = SlotStatus.complete if len(good) >= cfg.complete_ratio * expected else SlotStatus.recovered
    stats: dict[str, int | None] = {}
    for i, name in enumerate(POWERS):
        values = [v for p in good if (v := p.powers[i]) is not None]
        stats[f"{name}_min"] = min(values) if values else None
        stats[f"{name}_avg"] = round(sum(values) / len(values)) if values else None
        stats[f"{name}_max"] = max(values) if values else None
    socs = [p.soc_tenths for p in good if p.soc_tenths is not None]
    return SlotResult(
        status=status,
        good_polls=len(good),
        expected_polls=expected,
        energies=tuple(energy) if measured else None,
        power_stats=stats,
        soc_start_tenths=socs[0] if socs else None,
        soc_end_tenths=socs[-1] if socs else None,
    )


def slot_row(
    site_id: int, slot_start: datetime, cfg: CollectorConfig, r: SlotResult, now: datetime
) -> dict[str, Any]:
    energies = (
        dict.fromkeys(ENERGY, None) if r.energies is None else dict(zip(ENERGY, r.energies, strict=True))
    )
    return {
        "site_id": site_id,
        "slot_start": slot_start,
        "slot_minutes": cfg.slot_minutes,
        "status": r.status,
        "good_polls": r.good_polls,
        "expected_polls": r.expected_polls,
        **energies,
        **r.power_stats,
        "soc_start_tenths": r.soc_start_tenths,
        "soc_end_tenths": r.soc_end_tenths,
        "leaf": None,
        "computed_at": now,
    }


def load_inputs(
    session: Session, site_ids: Sequence[int], slot_start: datetime, cfg: CollectorConfig
) -> dict[int, tuple[list[Interval], list[Sample]]]:
    """Readings from the slot's start to ``max_gap_s`` past its end: every interval that can overlap
    it ends in that window (a longer one cannot be split anyway), every sample of the slot is in it."""
    c = SiteReading.__table__.c  # type: ignore[attr-defined]
    lo, hi = slot_start, slot_start + cfg.slot + timedelta(seconds=cfg.max_gap_s)
    columns = [c.site_id, c.ts, c.quality, c.accepted, c.interval_start, *(c[p] for p in POWERS)]
    columns += [c.soc_tenths, *(c[f"d_{f}"] for f in ENERGY)]
    rows = session.execute(
        sa_select(*columns).where(c.site_id.in_(site_ids), c.ts >= lo, c.ts <= hi).order_by(c.site_id, c.ts)
    ).all()
    out: dict[int, tuple[list[Interval], list[Sample]]] = {i: ([], []) for i in site_ids}
    for row in rows:
        intervals, samples = out[row[0]]
        samples.append(Sample(row[1], row[2], tuple(row[5:9]), row[9]))
        if row[3] and row[4] is not None:
            intervals.append(Interval(row[4], row[1], tuple(row[10:16])))
    return out


def last_closed_slot(cfg: CollectorConfig, now: datetime) -> datetime:
    """The newest slot whose closing reading must have arrived by ``now``."""
    # a slow poll still being stored (its time-outs are wall time)
    settle = cfg.settle + timedelta(seconds=(2 * cfg.timeout_s + 1) * cfg.clock_speed)
    return cfg.slot_start(now - settle) - cfg.slot


def aggregate_due(engine: Engine, cfg: CollectorConfig, now: datetime, *, lease: Lease | None = None) -> int:
    """Create the slot rows of every enabled site up to the last closed slot; returns rows written."""
    last = last_closed_slot(cfg, now)
    oldest = cfg.slot_start(now - timedelta(days=cfg.catchup_days))
    written = 0
    with Session(engine) as session:
        nxt = _next_slots(session, cfg, oldest)
        pending = {site: start for site, start in nxt.items() if start <= last}
        steps = 0
        while pending and steps < MAX_SLOTS_PER_RUN:
            slot = min(pending.values())
            sites = sorted(site for site, start in pending.items() if start == slot)
            inputs = load_inputs(session, sites, slot, cfg)
            rows = [slot_row(i, slot, cfg, compute_slot(slot, cfg, *inputs[i]), now) for i in sites]
            if lease is not None:
                lease.fence(session)
            session.execute(insert(SlotEnergy.__table__), rows)  # type: ignore[attr-defined]
            session.commit()
            written += len(rows)
            steps += 1
            for site in sites:
                pending[site] = slot + cfg.slot
                if pending[site] > last:
                    del pending[site]
    return written


def _next_slots(session: Session, cfg: CollectorConfig, oldest: datetime) -> dict[int, datetime]:
    """Per enabled site, the first slot without a row: after its newest row, or from its first reading
    (or its registration, when it never answered), but not older than the catch-up limit."""
    sites = session.exec(select(Site.id, Site.created_at).where(col(Site.enabled).is_(True))).all()
    ids = [i for i, _ in sites]
    if not ids:
        return {}
    newest = dict(
        session.exec(  # type: ignore[arg-type]
            select(SlotEnergy.site_id, func.max(SlotEnergy.slot_start))
            .where(col(SlotEnergy.site_id).in_(ids))
            .group_by(col(SlotEnergy.site_id))
        ).all()
    )
    first = dict(
        session.exec(  # type: ignore[arg-type]
            select(SiteReading.site_id, func.min(SiteReading.ts))
            .where(col(SiteReading.site_id).in_([i for i in ids if i not in newest]))
            .group_by(col(SiteReading.site_id))
        ).all()
    )
    out: dict[int, datetime] = {}
    for site_id, created in sites:
        assert site_id is not None
        if site_id in newest:
            start = _aware(newest[site_id]) + cfg.slot
        else:
            start = cfg.slot_start(min(_aware(first[site_id]), created) if site_id in first else created)
        out[site_id] = max(start, oldest)
    return out


def _aware(t: datetime) -> datetime:
    # func.max/min bypass the column type on SQLite and come back as naive (UTC) datetimes or text.
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t if t.tzinfo else t.replace(tzinfo=UTC)
