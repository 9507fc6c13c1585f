"""The collector connects only to addresses inside the site networks, checked again at each connection."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from datetime import timedelta
from ipaddress import ip_address

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from sqlmodel import select as sql_select

from app.core.security import utcnow
from ess_collector.collector import Collector
from ess_collector.models import SiteFault, SiteReading
from ess_collector.netpolicy import (
    DEFAULT_SITE_NETWORKS,
    HostDoesNotResolve,
    HostOutsideSiteNetworks,
    address_allowed,
    parse_networks,
    resolve_allowed,
)
from tests.ess_collector.harness import (
    FAST,
    connected,
    listener_fixture,  # noqa: F401  (the `listener` fixture)
    make_owner,
    site_row,
)

ONLY_10 = parse_networks("10.0.0.0/8")


def drain(s: socket.socket) -> int:
    """Accept (and close) every pending connection; how many there were."""
    n = 0
    while connected(s):
        conn, _ = s.accept()
        conn.close()
        n += 1
    return n


def add_site(engine: Engine, host: str, port: int) -> int:
    owner = make_owner(engine, f"owner-{port}@example.com")
    with Session(engine) as s:
        site = site_row(owner, host, port, pv_nameplate_w=3000, battery_capacity_wh=0)
        s.add(site)
        s.commit()
        return site.id or 0


def poll(engine: Engine, cfg: object) -> None:
    collector = Collector(engine, cfg)  # type: ignore[arg-type]
    try:
        asyncio.run(collector.poll_once())
    finally:
        collector.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_collector_does_not_connect_outside_the_site_networks(
    clean_db: Engine, listener: socket.socket, host: str
) -> None:
    site_id = add_site(clean_db, host, listener.getsockname()[1])
    cfg = replace(FAST, timeout_s=0.2, site_networks=ONLY_10, comm_lost_polls=1)
    poll(clean_db, cfg)
    assert not connected(listener)
    with Session(clean_db) as s:
        (reading,) = s.exec(sql_select(SiteReading).where(col(SiteReading.site_id) == site_id)).all()
        (fault,) = s.exec(sql_select(SiteFault).where(col(SiteFault.site_id) == site_id)).all()
    assert reading.quality == "missing" and (reading.detail or "").startswith("SiteNotAllowed")
    # what the owner reads says nothing of why (the cause is in the reading, for admins)
    assert fault.kind == "comm_lost" and fault.detail == "no valid answer for 1 polls"


def test_the_same_site_is_polled_when_its_network_is_allowed(
    clean_db: Engine, listener: socket.socket
) -> None:
    add_site(clean_db, "localhost", listener.getsockname()[1])
    poll(clean_db, replace(FAST, timeout_s=0.2))  # the default networks: loopback is in
    assert connected(listener)


def test_a_name_is_checked_again_at_each_connection(clean_db: Engine, listener: socket.socket) -> None:
    """Allowed while a connection is open; once it is gone, a name resolving outside is not followed."""
    site_id = add_site(clean_db, "localhost", listener.getsockname()[1])
    collector = Collector(clean_db, replace(FAST, timeout_s=0.2))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(collector.poll_once())
        assert drain(listener) >= 1  # connected (and, as nothing answered, closed again)
        # The name now "resolves elsewhere": same collector, narrower networks (a rebinding stand-in).
        collector.cfg = replace(collector.cfg, site_networks=ONLY_10)
        for state in collector.states.values():
            state.backoff_until = None
        loop.run_until_complete(collector.poll_once())
    finally:
        collector.close()
        loop.close()
    assert not connected(listener)
    with Session(clean_db) as s:
        rows = s.exec(
            sql_select(SiteReading).where(col(SiteReading.site_id) == site_id).order_by(col(SiteReading.id))
        ).all()
    assert (rows[-1].detail or "").startswith("SiteNotAllowed")


def test_resolution_rules() -> None:
    assert resolve_allowed("127.0.0.1", 502, DEFAULT_SITE_NETWORKS) == ["127.0.0.1"]
    assert set(resolve_allowed("localhost", 502, DEFAULT_SITE_NETWORKS)) <= {"127.0.0.1", "::1"}
    for public in ("8.8.8.8", "169.254.169.254", "100.64.0.1", "::ffff:8.8.8.8", "2001:db8::1"):
        with pytest.raises(HostOutsideSiteNetworks):
            resolve_allowed(public, 502, DEFAULT_SITE_NETWORKS)
    with pytest.raises(HostOutsideSiteNetworks, match="resolves to an address outside"):
        resolve_allowed("localhost", 502, ONLY_10)
    with pytest.raises(HostDoesNotResolve):
        resolve_allowed("no-such-host.invalid", 502, DEFAULT_SITE_NETWORKS)
    assert address_allowed(ip_address("::ffff:10.1.2.3"), ONLY_10)
    assert address_allowed(ip_address("fd00::1"), DEFAULT_SITE_NETWORKS)
    with pytest.raises(ValueError, match="not a CIDR"):
        parse_networks("10.0.0.1/8")
    assert parse_networks(" 10.0.0.0/8 , ,192.168.1.0/24") == (
        *ONLY_10,
        *parse_networks("192.168.1.0/24"),
    )
    assert not socket.has_ipv6 or address_allowed(ip_address("::1"), DEFAULT_SITE_NETWORKS)


def test_a_failed_poll_is_stamped_with_the_round_start(clean_db: Engine, listener: socket.socket) -> None:
    """How long a poll took to fail (refused at once, silent for the whole timeout) must not show in the
    stored time the owner reads: a failure is stamped with the start of its polling round."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
    try:
        silent = add_site(clean_db, "127.0.0.1", listener.getsockname()[1])  # accepts, never answers
        refused = add_site(clean_db, "127.0.0.1", closed.getsockname()[1])
        before = utcnow()
        poll(clean_db, replace(FAST, timeout_s=0.3))
    finally:
        closed.close()
    with Session(clean_db) as s:
        stamps = {r.site_id: r.ts for r in s.exec(sql_select(SiteReading)).all()}
    assert stamps[silent] == stamps[refused]
    assert stamps[silent] - before < timedelta(seconds=0.3)  # the silent one took 2 x 0.3 s to fail
