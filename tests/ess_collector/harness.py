"""Drive the real collector against simulated sites over TCP, with simulated time stepped explicitly.

Simulators run at speed 0 and the collector gets the same clock, so a 15-minute slot takes a second.
"""

from __future__ import annotations

import asyncio
import select as io_select
import socket
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.core.security import utcnow
from app.users.models import Role, User, UserStatus
from ess_collector.aggregation import aggregate_due
from ess_collector.collector import Collector, PollReport
from ess_collector.config import CollectorConfig
from ess_collector.models import Site, SiteEvent, SiteFault, SiteReading, SlotEnergy
from ess_collector.simulator import SimulatorCluster, ThreadedCluster
from ess_collector.validation import ENERGY

START = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)  # 12:00 KST: PV, load and battery all active; slot-aligned
HOST = "127.0.0.1"
Row = TypeVar("Row", SiteReading, SlotEnergy, SiteFault, SiteEvent)
FAST = CollectorConfig(slot_minutes=5, poll_interval_s=10, timeout_s=0.3, max_backoff_s=40)


@pytest.fixture(name="listener")
def listener_fixture() -> Iterator[socket.socket]:
    """``listener``: a TCP port that records whether anybody connected (a pending connection makes it
    readable). A test module that imports ``listener_fixture`` has it."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(8)
        yield s


def connected(s: socket.socket) -> bool:
    return bool(io_select.select([s], [], [], 0.2)[0])


def make_owner(engine: Engine, email: str = "owner@example.com") -> int:
    with Session(engine) as s:
        user = User(
            email=email,
            password_hash="x",
            display_name="Owner",
            role=Role.prosumer,
            status=UserStatus.approved,
            created_at=utcnow(),
        )
        s.add(user)
        s.commit()
        return user.id or 0


def site_row(
    owner_id: int,
    host: str,
    port: int,
    *,
    name: str = "x",
    pv_nameplate_w: int = 5000,
    battery_capacity_wh: int = 10_000,
    reserve_soc_pct: int = 10,
    enabled: bool = True,
    created_at: datetime | None = None,
) -> Site:
    """A site at ``host:port`` (Modbus device 1), created now unless ``created_at`` says when."""
    return Site(
        owner_id=owner_id,
        name=name,
        host=host,
        port=port,
        device_id=1,
        pv_nameplate_w=pv_nameplate_w,
        battery_capacity_wh=battery_capacity_wh,
        reserve_soc_pct=reserve_soc_pct,
        enabled=enabled,
        created_at=created_at or utcnow(),
    )


def add_sites(
    engine: Engine, cluster: ThreadedCluster, owner_id: int, created_at: datetime = START
) -> list[int]:
    ids = []
    with Session(engine) as s:
        for sim, port in zip(cluster.sims, cluster.ports, strict=True):
            site = site_row(
                owner_id,
                HOST,
                port,
                name=f"sim {sim.site_id}",
                pv_nameplate_w=sim.config.pv_peak_w,
                battery_capacity_wh=sim.config.capacity_wh,
                reserve_soc_pct=sim.config.reserve_pct,
                created_at=created_at,
            )
            s.add(site)
            s.flush()
            ids.append(site.id or 0)
        s.commit()
    return ids


class Harness:
    def __init__(
        self,
        engine: Engine,
        n_sites: int = 1,
        *,
        cfg: CollectorConfig = FAST,
        start: datetime = START - timedelta(seconds=30),
        seed: int = 7,
    ) -> None:
        self.engine, self.cfg = engine, cfg
        self.now = start
        self.cluster = ThreadedCluster(SimulatorCluster(n_sites, seed=seed, start=start, speed=0)).start()
        self.owner = make_owner(engine)
        self.site_ids = add_sites(engine, self.cluster, self.owner, start)
        self.loop = asyncio.new_event_loop()
        self.collector = Collector(engine, cfg)

    @property
    def sims(self):  # type: ignore[no-untyped-def]
        return self.cluster.sims

    def restart_collector(self) -> None:
        """A new process: nothing in memory, everything from the database."""
        self.collector.close()
        self.collector = Collector(self.engine, self.cfg)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        for sim in self.sims:
            sim.advance_to(self.now)

    def poll(self, n: int = 1) -> list[PollReport]:
        reports = []
        for _ in range(n):
            self.advance(self.cfg.poll_interval_s)
            reports.append(self.loop.run_until_complete(self.collector.poll_once(self.now)))
        return reports

    def poll_until(self, t: datetime) -> None:
        while self.now + timedelta(seconds=self.cfg.poll_interval_s) <= t:
            self.poll()

    def aggregate(self) -> int:
        return aggregate_due(self.engine, self.cfg, self.now)

    def close(self) -> None:
        self.collector.close()
        self.loop.close()
        self.cluster.stop()

    # -- reading back -----------------------------------------------------------------------------

    def _rows(self, model: type[Row], order_by: Any, index: int) -> list[Row]:
        """Every ``model`` row of the index-th site, in ``order_by`` order."""
        with Session(self.engine) as s:
            query = select(model).where(col(model.site_id) == self.site_ids[index])
            return list(s.exec(query.order_by(col(order_by))).all())

    def readings(self, index: int = 0) -> list[SiteReading]:
        return self._rows(SiteReading, SiteReading.id, index)

    def slots(self, index: int = 0) -> list[SlotEnergy]:
        return self._rows(SlotEnergy, SlotEnergy.slot_start, index)

    def faults(self, index: int = 0) -> list[SiteFault]:
        return self._rows(SiteFault, SiteFault.id, index)

    def events(self, index: int = 0) -> list[SiteEvent]:
        return self._rows(SiteEvent, SiteEvent.id, index)

    def site(self, index: int = 0) -> Site:
        with Session(self.engine) as s:
            site = s.get(Site, self.site_ids[index])
            assert site is not None
            return site


def counters(r: SiteReading) -> tuple[int, ...]:
    return tuple(getattr(r, f) for f in ENERGY)


def deltas(r: SiteReading) -> tuple[int, ...]:
    return tuple(getattr(r, f"d_{f}") for f in ENERGY)


def accepted_energy(rows: Sequence[SiteReading]) -> tuple[int, ...]:
    """The energy the collector counted: the sum of every accepted interval."""
    total = [0] * len(ENERGY)
    for r in rows:
        if r.accepted and r.interval_start is not None:
            total = [a + b for a, b in zip(total, deltas(r), strict=True)]
    return tuple(total)


def with_cfg(**changes: object) -> CollectorConfig:
    return replace(FAST, **changes)  # type: ignore[arg-type]
