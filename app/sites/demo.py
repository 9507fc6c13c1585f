"""Simulated sites for development: `essx run` serves a few and registers them on first start, so a new
user sees live data at once; `essx simulate --register` does the same for a standalone simulator."""

from __future__ import annotations

import json
import logging
import secrets

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.core.security import hash_secret, utcnow
from app.users.models import Role, User, UserStatus
from ess_collector.models import Site, SiteEvent
from ess_collector.simulator import SimulatorCluster, ThreadedCluster

log = logging.getLogger(__name__)
SYSTEM_EMAIL = "demo-sites@essx.local"


def start_demo_cluster(
    n: int, base_port: int | None, *, engine: Engine | None = None, host: str = "127.0.0.1", seed: int = 0
) -> tuple[ThreadedCluster | None, str | None]:
    """N real-time simulated sites, and why they could not start (None when they did, or n is 0).

    With ``base_port`` they listen on base_port, base_port + 1, ... or not at all. Without it they go
    back to the ports the registered simulated sites point at (the last run's), if those are free, else
    to ports the system picks; `register_cluster` then points the registered sites at them. So two
    instances on one machine never fight over a port, whatever their ESSX_PORT."""
    if n <= 0:
        return None, None
    if base_port is not None:
        choices: list[list[int] | None] = [[base_port + i for i in range(n)]]
    else:
        previous = registered_ports(engine, host, n) if engine is not None else None
        choices = [previous, None] if previous else [None]
    failure = ""
    for ports in choices:
        try:
            cluster = SimulatorCluster(n, seed=seed, speed=1, host=host, ports=ports)
            return ThreadedCluster(cluster).start(), None
        except (OSError, RuntimeError) as exc:  # pymodbus reports a taken port as a RuntimeError
            where = "free ports" if ports is None else f"ports {', '.join(map(str, ports))}"
            failure = f"{n} simulated sites could not listen on {host} ({where}): {exc}"
            log.warning("demo sites not started", extra={"fields": {"error": failure}})
    return None, failure


RUN, SIMULATE = "essx run", "essx simulate"  # who registered a simulated site (its event says so)


def demo_sites(session: Session, host: str, source: str = RUN) -> list[Site]:
    """The simulated sites on ``host`` that ``source`` registered, in the simulators' order (by id).
    Registrations from before the source was recorded count as `essx run`'s."""
    ids = []
    for e in session.exec(select(SiteEvent).where(col(SiteEvent.kind) == "registered")):
        detail = json.loads(e.detail) if e.detail else {}
        if isinstance(detail, dict) and detail.get("simulated") and detail.get("source", RUN) == source:
            ids.append(e.site_id)
    query = select(Site).where(col(Site.id).in_(ids), col(Site.host) == host).order_by(col(Site.id))
    return list(session.exec(query).all())


def registered_ports(engine: Engine, host: str, n: int) -> list[int] | None:
    """The ports `essx run`'s first n registered simulated sites point at, if there are n of them."""
    with Session(engine) as session:
        sites = demo_sites(session, host)[:n]
    return [s.port for s in sites] if len(sites) == n else None


def system_owner(session: Session) -> User:
    """The owner of simulated sites: the first admin, else a system account nobody can log in to."""
    admin = session.exec(select(User).where(col(User.role) == Role.admin).order_by(col(User.id))).first()
    if admin is not None:
        return admin
    user = session.exec(select(User).where(col(User.email) == SYSTEM_EMAIL)).first()
    if user is None:
        user = User(
            email=SYSTEM_EMAIL,
            password_hash=hash_secret(secrets.token_urlsafe(32)),  # random: the account cannot log in
            display_name="Demo sites",
            role=Role.prosumer,
            status=UserStatus.approved,
            created_at=utcnow(),
        )
        session.add(user)
        session.flush()
    return user


def register_cluster(
    engine: Engine, cluster: ThreadedCluster, *, only_if_empty: bool = True, source: str = RUN
) -> int:
    """Register the simulated sites not registered yet (skipping endpoints already taken); returns how
    many were new. With ``only_if_empty`` new ones are registered only on the first start (no site at
    all yet): the user's own set of sites is left alone.

    `essx run`'s simulators may listen on other ports than last time (those were taken): the sites it
    registered before are pointed at where the simulators listen now, with a `moved` event."""
    host = cluster.cluster.host
    with Session(engine) as session:
        known = demo_sites(session, host) if source == RUN else []
        first_start = session.exec(select(Site.id)).first() is None
        now = utcnow()
        for site, port in zip(known, cluster.ports, strict=False):
            if site.port != port:  # the last run's port was taken: follow the simulator
                session.add(
                    SiteEvent(
                        site_id=site.id or 0,
                        ts=now,
                        kind="moved",
                        detail=json.dumps({"simulated": True, "from": site.port, "to": port}),
                    )
                )
                site.port = port
                session.add(site)
        session.flush()
        new = 0
        if only_if_empty and not first_start:
            session.commit()
            return 0
        owner = system_owner(session)
        for sim, port in list(zip(cluster.sims, cluster.ports, strict=True))[len(known) :]:
            taken = session.exec(
                select(Site.id).where(
                    col(Site.host) == host, col(Site.port) == port, col(Site.device_id) == 1
                )
            ).first()
            if taken is not None:
                continue
            site = Site(
                owner_id=owner.id or 0,
                name=f"Simulated site {sim.site_id + 1}",
                host=host,
                port=port,
                device_id=1,
                pv_nameplate_w=sim.config.pv_peak_w,
                battery_capacity_wh=sim.config.capacity_wh,
                reserve_soc_pct=sim.config.reserve_pct,
                max_charge_w=sim.config.max_charge_w,
                max_discharge_w=sim.config.max_discharge_w,
                created_at=now,
            )
            session.add(site)
            session.flush()
            detail = json.dumps({"simulated": True, "source": source, "serial": sim.info.serial})
            session.add(SiteEvent(site_id=site.id or 0, ts=now, kind="registered", detail=detail))
            new += 1
        session.commit()
        return new
