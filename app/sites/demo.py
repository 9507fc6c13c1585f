"""Simulated sites for development: `essx run` serves a few and registers them on first start, so a new
user sees live data at once; `essx simulate --register` does the same for a standalone simulator."""

from __future__ import annotations

import json
import logging
import secrets

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.core.security import hash_secret, utcnow
from app.models import Role, User, UserStatus
from app.models.site import Site, SiteEvent
from ess_collector.simulator import SimulatorCluster, ThreadedCluster

log = logging.getLogger(__name__)
SYSTEM_EMAIL = "demo-sites@essx.local"


def start_demo_cluster(
    n: int, base_port: int, *, host: str = "127.0.0.1", seed: int = 0
) -> ThreadedCluster | None:
    """N real-time simulated sites on consecutive ports; None (and a warning) if the ports are taken."""
    if n <= 0:
        return None
    try:
        return ThreadedCluster(
            SimulatorCluster(n, seed=seed, speed=1, host=host, base_port=base_port)
        ).start()
    except (OSError, RuntimeError) as exc:  # pymodbus reports a taken port as a RuntimeError
        log.warning(
            "demo sites not started", extra={"fields": {"ports": f"{base_port}+{n}", "error": str(exc)}}
        )
        return None


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


def register_cluster(engine: Engine, cluster: ThreadedCluster, *, only_if_empty: bool = True) -> int:
    """Register each simulated site (skipping endpoints already registered); returns how many were new."""
    with Session(engine) as session:
        if only_if_empty and session.exec(select(Site.id)).first() is not None:
            return 0  # not the first start: the user's own set of sites is left alone
        owner = system_owner(session)
        new = 0
        for sim, port in zip(cluster.sims, cluster.ports, strict=True):
            host = cluster.cluster.host
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
                created_at=utcnow(),
            )
            session.add(site)
            session.flush()
            detail = json.dumps({"simulated": True, "serial": sim.info.serial})
            session.add(SiteEvent(site_id=site.id or 0, ts=utcnow(), kind="registered", detail=detail))
            new += 1
        session.commit()
        return new
