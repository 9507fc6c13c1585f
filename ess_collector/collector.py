"""Polling: every enabled site at once over pooled Modbus connections, judged, stored in one transaction.

The per-site state (last accepted counters, heartbeat, fault runs) lives in memory for speed and is
rebuilt from the stored readings whenever this process (re)gains the schedule, so a restart or a
takeover continues from the last *stored* accepted reading and can create no phantom energy. The
in-memory state only advances after the transaction that stores the readings has committed.

A round of 1,000 sites must cost well under a second of CPU, so the hot path avoids ORM objects: the
enabled sites are read as plain rows, each reading becomes one tuple in column order, a round's readings
are one DBAPI ``executemany`` of a statement compiled once (``_ReadingInsert``), and a round's site
status changes are one executemany per set of changed columns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from common import clock
from common.lease import Lease
from ess_collector import faults
from ess_collector.config import CollectorConfig
from ess_collector.dispatch import DispatchCommand, WriteOutcome, WriteStatus, send_with_timeout
from ess_collector.models import Site, SiteEvent, SiteFault, SiteReading
from ess_collector.reader import SiteConnectionPool, SiteReadError, read_with_client
from ess_collector.sunspec import Reading
from ess_collector.validation import (
    ENERGY,
    Baseline,
    Limits,
    SiteState,
    Verdict,
    assess,
    copy_state,
    remember,
)

log = logging.getLogger(__name__)
SEEN_EVERY = timedelta(seconds=30)


FaultListener = Callable[[Session, int, faults.FaultChange, datetime], None]
"""Told of each fault that opens or closes (session, site id, change, time), inside the transaction that
records it: how the app hears of faults without the collector knowing the app's tables."""


@dataclass(frozen=True)
class SiteTarget:
    id: int
    host: str
    port: int
    device_id: int
    pv_nameplate_w: int
    battery_capacity_wh: int
    reserve_soc_pct: int
    max_charge_w: int | None = None  # None: unknown (a share of the capacity is assumed)
    max_discharge_w: int | None = None


@dataclass(frozen=True)
class PollReport:
    sites: int
    polled: int
    answered: int
    accepted: int
    failed: int
    seconds: float


@dataclass(slots=True)
class _Outcome:
    state: SiteState
    ts: datetime
    answered: bool  # the device answered (heartbeat or values), even if the reading was rejected
    row: tuple[Any, ...]  # one site_readings row in _READING_COLUMNS order
    changes: list[faults.FaultChange]
    events: list[tuple[str, dict[str, Any]]]

    @property
    def accepted(self) -> bool:
        return bool(self.row[_ACCEPTED])


class Collector:
    def __init__(
        self,
        engine: Engine,
        cfg: CollectorConfig,
        *,
        lease: Lease | None = None,
        pool: SiteConnectionPool | None = None,
        on_fault: FaultListener | None = None,
    ) -> None:
        self.engine, self.cfg, self.lease, self.on_fault = engine, cfg, lease, on_fault
        self.pool = pool or SiteConnectionPool(timeout=cfg.timeout_s)
        self.states: dict[int, SiteState] = {}
        self._endpoint_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._targets: dict[int, SiteTarget] = {}
        # What the sites table says (status, last_seen_at), so unchanged rows are not rewritten each poll.
        self._written: dict[int, tuple[str | None, datetime | None]] = {}
        self._pending: dict[int, tuple[str | None, datetime | None]] = {}
        self._insert = _ReadingInsert(engine)

    def forget(self) -> None:
        """Drop the in-memory state (after losing the schedule): it is reloaded from the database."""
        self.states.clear()
        self._written.clear()

    def close(self) -> None:
        self.pool.close()
        self._endpoint_locks.clear()

    # -- one poll of every due site ---------------------------------------------------------------

    async def poll_once(self, now: datetime | None = None) -> PollReport:
        """Poll every enabled site that is not backing off; ``now`` fixes the timestamps (tests)."""
        t0 = time.perf_counter()
        started = now or clock.now()
        targets = self.refresh_sites()
        due = [t for t in targets if (b := self.states[t.id].backoff_until) is None or b <= started]
        results = await asyncio.gather(*(self._read(t) for t in due))
        outcomes = [
            self._judge(t, r, now or self._arrival(r, started)) for t, r in zip(due, results, strict=True)
        ]
        self._store(outcomes)
        for o in outcomes:  # committed: the tentative states become the real ones
            self.states[o.state.site_id] = o.state
        answered = sum(1 for r in results if isinstance(r, Reading))
        return PollReport(
            sites=len(targets),
            polled=len(due),
            answered=answered,
            accepted=sum(1 for o in outcomes if o.accepted),
            failed=len(due) - answered,
            seconds=time.perf_counter() - t0,
        )

    @staticmethod
    def _arrival(r: Reading | SiteReadError, started: datetime) -> datetime:
        if isinstance(r, Reading):
            return r.received_at or clock.now()
        # A failed poll is stamped with the round's start: how long it took to fail (refused at once,
        # filtered after the timeout) must not show in what the site's owner can read.
        return started

    async def _read(self, t: SiteTarget) -> Reading | SiteReadError:
        # Sites behind one gateway share a TCP connection; Modbus TCP clients must not interleave on it.
        lock = self._endpoint_locks.setdefault((t.host, t.port), asyncio.Lock())
        async with lock:
            try:
                client = await self.pool.checked_client(t.host, t.port, self.cfg.site_networks)
                return await read_with_client(client, t.device_id, self.cfg.timeout_s, retries=1)
            except SiteReadError as exc:
                return exc
            except (OSError, ValueError) as exc:  # e.g. a host name that does not resolve
                return SiteReadError(f"{type(exc).__name__}: {exc}")

    def target(self, site_id: int) -> SiteTarget:
        return self._targets[site_id]

    async def command(self, site_id: int, command: DispatchCommand | None) -> WriteOutcome:
        """Write a dispatch command (None: back to self-consumption) over the site's pooled connection."""
        t = self._targets[site_id]
        async with self._endpoint_locks.setdefault((t.host, t.port), asyncio.Lock()):
            try:
                client = await self.pool.checked_client(t.host, t.port, self.cfg.site_networks)
            except (SiteReadError, OSError, ValueError) as exc:
                return WriteOutcome(WriteStatus.UNREACHABLE, f"{type(exc).__name__}: {exc}"[:300])
            timeout = 4 * self.cfg.timeout_s  # a command is five requests
            return await send_with_timeout(client, command, timeout_s=timeout, device_id=t.device_id)

    def set_fault(
        self, session: Session, site_id: int, kind: str, active: bool, detail: str | None, ts: datetime
    ) -> None:
        """Open or close a fault the collector does not infer from readings (e.g. dispatch), in
        ``session``'s transaction; the site's status follows at the next poll."""
        state = self.states.get(site_id)
        if state is None:
            return
        for change in faults.set_fault(state, kind, active, detail):
            self._apply_fault(session, site_id, change, ts)

    def _judge(self, t: SiteTarget, result: Reading | SiteReadError, ts: datetime) -> _Outcome:
        st = copy_state(self.states[t.id])
        if isinstance(result, SiteReadError):
            st.failures += 1
            # Skip 0, 1, 3, 7, ... polls after 1, 2, 3, 4, ... failures in a row (capped); the half
            # interval keeps the next poll due when no skip is meant, whatever the timing jitter.
            interval = self.cfg.poll_interval_s
            wait = min(interval * 2 ** min(st.failures - 1, 16), self.cfg.max_backoff_s) - interval / 2
            st.backoff_until = ts + timedelta(seconds=wait * self.cfg.clock_speed)  # ts is energy time
            error = f"{type(result).__name__}: {result}"[:300]  # admins only (app/sites/repository.py)
            row = (t.id, ts, "missing", error, *_NO_VALUES)
            return _Outcome(st, ts, False, row, faults.after_failure(st, self.cfg), [])
        st.failures, st.backoff_until = 0, None
        verdict = assess(st, result, ts, self.cfg)
        remember(st, result, verdict)
        changes = faults.after_answer(st, result, verdict, self.cfg)
        answered = result.heartbeat is not None or verdict.quality != "missing"
        row = _reading_row(t.id, ts, result, verdict)
        return _Outcome(st, ts, answered, row, changes, list(verdict.events))

    def _store(self, outcomes: Sequence[_Outcome]) -> None:
        self._pending.clear()
        with Session(self.engine) as session:
            if self.lease is not None:
                self.lease.fence(session)  # raises LeaseLost: nothing below is written
            if outcomes:
                self._insert.run(session, [o.row for o in outcomes])
            events = [
                {"site_id": o.state.site_id, "ts": o.ts, "kind": kind, "detail": json.dumps(data)}
                for o in outcomes
                for kind, data in o.events
            ]
            if events:
                session.execute(insert(SiteEvent.__table__), events)  # type: ignore[attr-defined]
            updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for o in outcomes:
                for change in o.changes:
                    self._apply_fault(session, o.state.site_id, change, o.ts)
                if values := self._site_update(o):
                    updates.setdefault(tuple(sorted(values)), []).append(values)
            for keys, rows in updates.items():  # one executemany per set of changed columns
                new: dict[str, Any] = {k.removeprefix("new_"): bindparam(k) for k in keys if k != "site_id"}
                session.execute(update(_SITES).where(_SITES.c.id == bindparam("site_id")).values(new), rows)
            session.commit()
        self._written.update(self._pending)
        self._pending.clear()

    def _site_update(self, o: _Outcome) -> dict[str, Any] | None:
        """Status on change; last_seen_at at most every SEEN_EVERY (the readings hold the exact time).
        Returns the bind values of the site's UPDATE (``site_id``, ``new_<column>``), or None."""
        site_id, ts = o.state.site_id, o.ts
        status = faults.site_status(o.state)
        old_status, old_seen = self._written.get(site_id, (None, None))
        values: dict[str, Any] = {}
        if status != old_status:
            values["new_status"] = status
        if o.answered and (old_seen is None or ts - old_seen >= SEEN_EVERY or values):
            values["new_last_seen_at"] = ts
        if not values:
            return None
        self._pending[site_id] = (status, values.get("new_last_seen_at", old_seen))
        return {"site_id": site_id, **values}

    def _apply_fault(self, session: Session, site_id: int, change: faults.FaultChange, ts: datetime) -> None:
        if self.on_fault is not None:
            self.on_fault(session, site_id, change, ts)
        if change.open:
            session.add(SiteFault(site_id=site_id, kind=change.kind, detail=change.detail, opened_at=ts))
            session.flush()
            log.warning("site fault opened", extra={"fields": {"site": site_id, "kind": change.kind}})
        else:
            session.execute(
                update(SiteFault)
                .where(
                    col(SiteFault.site_id) == site_id,
                    col(SiteFault.kind) == change.kind,
                    col(SiteFault.closed_at).is_(None),
                )
                .values(closed_at=ts)
            )

    # -- sites and their state --------------------------------------------------------------------

    def refresh_sites(self) -> list[SiteTarget]:
        """The enabled sites; state for new ones is loaded from their stored readings and faults."""
        with Session(self.engine) as session:
            c = _SITES.c  # plain rows, no ORM objects: this runs every poll
            rows = session.execute(
                sa_select(
                    c.id,
                    c.host,
                    c.port,
                    c.device_id,
                    c.pv_nameplate_w,
                    c.battery_capacity_wh,
                    c.reserve_soc_pct,
                    c.max_charge_w,
                    c.max_discharge_w,
                )
                .where(c.enabled.is_(True))
                .order_by(c.id)
            ).all()
            targets = [SiteTarget(*row) for row in rows]
            new = [t for t in targets if t.id not in self.states or self._targets.get(t.id) != t]
            if new:
                self._load_states(session, new)
        for gone in set(self.states) - {t.id for t in targets}:
            del self.states[gone]
        # a disabled, deleted or re-addressed site's connection is closed (polls run after this, not beside)
        endpoints = {(t.host, t.port) for t in targets}
        for host, port in {(t.host, t.port) for t in self._targets.values()} - endpoints:
            self.pool.discard(host, port)
            self._endpoint_locks.pop((host, port), None)
        self._targets = {t.id: t for t in targets}
        return targets

    def _load_states(self, session: Session, targets: list[SiteTarget]) -> None:
        ids = [t.id for t in targets]
        R = SiteReading
        accepted = _latest_rows(session, ids, col(R.accepted).is_(True))
        answered = _latest_rows(
            session, ids, or_(col(R.heartbeat).is_not(None), col(R.device_time).is_not(None))
        )
        open_faults: dict[int, set[str]] = {}
        for site_id, kind in session.exec(
            select(SiteFault.site_id, SiteFault.kind).where(
                col(SiteFault.site_id).in_(ids), col(SiteFault.closed_at).is_(None)
            )
        ):
            open_faults.setdefault(site_id, set()).add(kind)
        for t in targets:
            st = SiteState(t.id, Limits.for_site(t.pv_nameplate_w, t.battery_capacity_wh, self.cfg))
            if (a := accepted.get(t.id)) is not None:
                st.baseline = Baseline(a.ts, tuple(getattr(a, f) for f in ENERGY))
            if (last := answered.get(t.id)) is not None:
                st.answered = True
                st.last_heartbeat, st.last_device_time = last.heartbeat, last.device_time
            st.open_faults = open_faults.get(t.id, set())
            # A fault that is open stays open until the condition is seen gone, not merely unproven.
            if faults.STALE in st.open_faults:
                st.stale_run = self.cfg.stale_polls
            if faults.IMBALANCE in st.open_faults:
                st.imbalance_run = self.cfg.imbalance_polls
            self.states[t.id] = st


_SITES = Site.__table__  # type: ignore[attr-defined]
_READING_COLUMNS = tuple(c.name for c in SiteReading.__table__.columns if c.name != "id")  # type: ignore[attr-defined]
# A row is (site_id, ts, quality, detail, the reading's values..., the verdict's columns...).
_VALUE_COLUMNS = (
    "pv_w", "load_w", "grid_w", "battery_w", "soc_tenths", *ENERGY,
    "heartbeat", "device_time", "inverter_state", "battery_state", "alarm_code",
)  # fmt: skip
_VERDICT_COLUMNS = ("accepted", "interval_start", *(f"d_{f}" for f in ENERGY))
assert ("site_id", "ts", "quality", "detail", *_VALUE_COLUMNS, *_VERDICT_COLUMNS) == _READING_COLUMNS, (
    "site_readings columns changed: update _reading_row"
)
_ACCEPTED = _READING_COLUMNS.index("accepted")
_NO_VALUES = (None,) * len(_VALUE_COLUMNS) + (False,) + (None,) * (len(_VERDICT_COLUMNS) - 1)
_NO_DELTAS = (None,) * len(ENERGY)


class _ReadingInsert:
    """The site_readings INSERT, compiled once, run as one DBAPI executemany of plain tuples per round.

    SQLAlchemy's executemany of dicts handles every parameter of every row in Python, which cost more
    than the insert itself at 1,000 rows a round; here only the columns whose type needs it (timestamps,
    booleans) go through that type's own bind processor, so what is stored is identical.
    """

    def __init__(self, engine: Engine) -> None:
        table = SiteReading.__table__  # type: ignore[attr-defined]
        compiled = insert(table).compile(dialect=engine.dialect, column_keys=list(_READING_COLUMNS))
        self.sql = str(compiled)
        positions = compiled.positiontup
        # Positional parameters (SQLite's "?") in the statement's order; named ones (psycopg) as dicts.
        self.order = (
            tuple(map(_READING_COLUMNS.index, positions)) if compiled.positional and positions else None
        )
        processors = (
            (i, table.c[k].type.dialect_impl(engine.dialect).bind_processor(engine.dialect))
            for i, k in enumerate(_READING_COLUMNS)
        )
        self.processors = [(i, p) for i, p in processors if p is not None]

    def run(self, session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
        params: list[Any] = []
        for row in rows:
            values = list(row)
            for i, process in self.processors:
                values[i] = process(values[i])
            if self.order is not None:
                params.append(tuple([values[i] for i in self.order]))
            else:
                params.append(dict(zip(_READING_COLUMNS, values, strict=True)))
        session.connection().exec_driver_sql(self.sql, params)


def _latest_rows(session: Session, site_ids: list[int], condition: Any) -> dict[int, SiteReading]:
    R = SiteReading
    newest = (
        select(func.max(R.id)).where(col(R.site_id).in_(site_ids), condition).group_by(col(R.site_id))
    ).scalar_subquery()
    rows = session.exec(select(R).where(col(R.id).in_(newest))).all()
    return {r.site_id: r for r in rows}


def _reading_row(site_id: int, ts: datetime, r: Reading, v: Verdict) -> tuple[Any, ...]:
    """One site_readings row in _READING_COLUMNS order."""
    return (
        site_id,
        ts,
        v.quality,
        v.detail[:300] if v.detail else None,
        r.pv_w,
        r.load_w,
        r.grid_w,
        r.battery_w,
        None if r.soc_pct is None else int(r.soc_pct * 10),
        r.pv_wh,
        r.load_wh,
        r.import_wh,
        r.export_wh,
        r.battery_charge_wh,
        r.battery_discharge_wh,
        r.heartbeat,
        r.device_time,
        r.inverter_state,
        r.battery_state,
        r.alarm_code,
        v.accepted,
        v.interval_start,
        *(_NO_DELTAS if v.deltas is None else v.deltas),
    )
