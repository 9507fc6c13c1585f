"""`essx run`'s simulated sites: ports that never collide between instances, registered sites that follow
their simulators across restarts, and a failed start that is reported (readiness: tests/api/test_ops.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.core.config import Settings
from app.core.db import make_engine
from app.core.migrate import upgrade
from app.runner import start_demo_sites
from ess_collector.models import Site, SiteEvent
from ess_collector.reader import read_site
from ess_collector.simulator import ThreadedCluster

console = Console(quiet=True)


def instance(tmp_path: Path, name: str, port: int) -> tuple[Settings, Engine]:
    data = tmp_path / name
    data.mkdir()
    settings = Settings(data_dir=data, port=port, demo_sites=3)
    upgrade(settings.sqlalchemy_url)
    return settings, make_engine(settings.sqlalchemy_url)


@pytest.fixture
def running() -> Iterator[list[ThreadedCluster]]:
    clusters: list[ThreadedCluster] = []
    yield clusters
    for c in clusters:
        c.stop()


def start(settings: Settings, engine: Engine, running: list[ThreadedCluster]) -> ThreadedCluster:
    demo, failure = start_demo_sites(settings, engine, console)
    assert demo is not None and failure is None, failure
    running.append(demo)
    return demo


def sites(engine: Engine) -> list[Site]:
    with Session(engine) as s:
        return list(s.exec(select(Site).order_by(col(Site.id))).all())


def answers(site: Site) -> bool:
    try:
        asyncio.run(read_site(site.host, site.port, site.device_id, timeout=2))
    except Exception:
        return False
    return True


def test_two_instances_whose_ports_used_to_collide_both_serve_their_sites(
    tmp_path: Path, running: list[ThreadedCluster]
) -> None:
    """ESSX_PORT 8000, 18000 and 28000 gave the same simulator ports; now each picks free ones."""
    first = start(*instance(tmp_path, "a", 8000), running)
    second = start(*instance(tmp_path, "b", 18000), running)
    third = start(*instance(tmp_path, "c", 28000), running)
    assert len({*first.ports, *second.ports, *third.ports}) == 9


def test_registered_sites_follow_their_simulators_across_restarts(
    tmp_path: Path, running: list[ThreadedCluster]
) -> None:
    settings, engine = instance(tmp_path, "a", 8000)
    demo = start(settings, engine, running)
    ports = demo.ports
    assert [s.port for s in sites(engine)] == ports and all(answers(s) for s in sites(engine))
    demo.stop()
    running.clear()

    # A restart goes back to the same ports when they are free: nothing moves.
    demo = start(settings, engine, running)
    assert demo.ports == ports and [s.port for s in sites(engine)] == ports
    demo.stop()
    running.clear()

    # One of them is taken meanwhile (say, by another instance): the sites follow the simulators.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[1]))
        squatter.listen(1)
        demo = start(settings, engine, running)
        assert ports[1] not in demo.ports
        now = sites(engine)
        assert [s.port for s in now] == demo.ports and len(now) == 3  # moved, not registered again
        assert all(answers(s) for s in now)
        with Session(engine) as s:
            moved = s.exec(select(SiteEvent).where(col(SiteEvent.kind) == "moved")).all()
        assert len(moved) >= 1


def test_a_taken_explicit_base_port_is_reported_not_ignored(tmp_path: Path) -> None:
    settings, engine = instance(tmp_path, "a", 8000)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        base = squatter.getsockname()[1]
        settings = settings.model_copy(update={"demo_sites_base_port": base})
        demo, failure = start_demo_sites(settings, engine, console)
    assert demo is None and failure is not None
    assert f"ports {base}, {base + 1}, {base + 2}" in failure
    assert sites(engine) == []
