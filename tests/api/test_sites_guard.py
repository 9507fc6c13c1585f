"""Site registration is no port scanner: who may register, where a site may be, what a failed probe
tells (nothing about why), and how often one may try."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, col
from sqlmodel import select as sql_select

from app.context import Context
from app.core.errors import TooManyRequests
from app.core.security import utcnow
from app.sites.service import collector_config, count_registration
from app.users.models import LoginThrottle
from ess_collector.collector import Collector
from ess_collector.models import Site
from tests.api.helpers import admin_headers
from tests.api.site_helpers import prosumer, site
from tests.ess_collector.harness import (
    connected,
    listener_fixture,  # noqa: F401  (the `listener` fixture)
)


def settings(ctx: Context, **changes: object) -> None:
    ctx.settings = ctx.settings.model_copy(update=changes)


def stored_sites(ctx: Context) -> list[Site]:
    with Session(ctx.engine) as s:
        return list(s.exec(sql_select(Site)).all())


# -- who ---------------------------------------------------------------------------------------------


def test_an_unapproved_prosumer_registers_no_site(client: TestClient, ctx: Context) -> None:
    settings(ctx, site_probe_timeout_seconds=0.05)
    headers, user_id = prosumer(client, ctx, approved=False)
    r = client.post("/api/v1/sites", json=site(), headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "Forbidden" and "approved" in r.json()["detail"]
    assert stored_sites(ctx) == []
    admin = admin_headers(client, ctx)
    assert client.post(f"/api/v1/admin/users/{user_id}/approve", headers=admin).status_code == 200
    assert client.post("/api/v1/sites", json=site(), headers=headers).status_code == 201
    # an admin registers for anyone, approved or not
    _, pending_id = prosumer(client, ctx, approved=False)
    r = client.post("/api/v1/sites", json=site(owner_id=pending_id), headers=admin)
    assert r.status_code == 201 and r.json()["owner_id"] == pending_id


# -- where -------------------------------------------------------------------------------------------


def test_addresses_outside_the_site_networks_are_refused(
    client: TestClient, ctx: Context, listener: socket.socket
) -> None:
    headers, _ = prosumer(client, ctx)
    for host in ("8.8.8.8", "169.254.169.254", "100.64.0.1", "::ffff:8.8.8.8", "2001:db8::1"):
        r = client.post("/api/v1/sites", json=site(host), headers=headers)
        assert r.status_code == 422 and r.json()["error"] == "SiteNotAllowed", (host, r.text)
        assert "ESSX_SITE_NETWORKS" in r.json()["detail"]
    r = client.post("/api/v1/sites", json=site("no-such-host.invalid"), headers=headers)
    assert r.status_code == 422 and r.json()["error"] == "SiteNotAllowed" and "resolve" in r.json()["detail"]
    # A name resolving outside the allowed networks (here: loopback no longer allowed) is refused as well,
    # and the server never connects to it.
    settings(ctx, site_networks="10.0.0.0/8,192.168.0.0/16")
    port = listener.getsockname()[1]
    for host, says in (
        ("localhost", "localhost resolves to an address outside"),
        ("127.0.0.1", "127.0.0.1 is outside"),
    ):
        r = client.post("/api/v1/sites", json=site(host, port), headers=headers)
        assert r.status_code == 422 and r.json()["error"] == "SiteNotAllowed", r.text
        assert r.json()["detail"].startswith(says), r.text
    assert not connected(listener), "the server connected to a refused address"
    assert stored_sites(ctx) == []


# -- what a failed probe tells ------------------------------------------------------------------------


@pytest.fixture
def endpoints() -> Iterator[dict[str, int]]:
    """Four ways for a port not to be a site, all on 127.0.0.1."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: the connection is refused at once
    filtered = socket.socket()
    filtered.bind(("127.0.0.1", 0))
    filtered.listen(0)
    filler = socket.create_connection(filtered.getsockname())  # the accept queue is full: SYNs are dropped
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connects, never answers
    talker = socket.socket()
    talker.bind(("127.0.0.1", 0))
    talker.listen(8)
    stop = threading.Event()

    def talk() -> None:  # something else listening: answers with HTTP, not Modbus
        talker.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = talker.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(256)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    try:
        yield {
            "closed": closed.getsockname()[1],
            "filtered": filtered.getsockname()[1],
            "silent": silent.getsockname()[1],
            "not modbus": talker.getsockname()[1],
        }
    finally:
        stop.set()
        thread.join(2)
        for s in (closed, filler, filtered, silent, talker):
            s.close()


def test_failed_probes_read_the_same_whatever_the_cause(
    client: TestClient, ctx: Context, endpoints: dict[str, int]
) -> None:
    timeout = 0.5
    settings(ctx, site_probe_timeout_seconds=timeout)
    headers, _ = prosumer(client, ctx)
    seen = {}
    for cause, port in endpoints.items():
        started = time.monotonic()
        r = client.post("/api/v1/sites", json=site(port=port), headers=headers)
        elapsed = time.monotonic() - started
        assert r.status_code == 201, r.text
        body = r.json()
        detail = client.get(f"/api/v1/sites/{body['id']}", headers=headers).json()
        seen[cause] = (
            body["status"],
            body["last_seen_at"],
            tuple((f["kind"], f["detail"]) for f in detail["open_faults"]),
        )
        # every failure ends at the probe's deadline: a refused port does not answer any sooner
        assert elapsed >= timeout, (cause, elapsed)
    assert set(seen.values()) == {
        ("offline", None, (("comm_lost", "no valid answer from the device when registered"),))
    }, seen

    # The collector polls them on: the owner still reads no cause (nor, in the time, how long it
    # took to fail); the admin reads the cause.
    collector = Collector(ctx.engine, replace(collector_config(ctx.settings), timeout_s=0.3))
    try:
        asyncio.run(collector.poll_once())
    finally:
        collector.close()
    admin = admin_headers(client, ctx)
    own, causes = set(), set()
    for s in client.get("/api/v1/sites", headers=headers).json():
        (mine,) = client.get(f"/api/v1/sites/{s['id']}/readings", headers=headers).json()
        (theirs,) = client.get(f"/api/v1/sites/{s['id']}/readings", headers=admin).json()
        own.add((mine["quality"], mine["detail"], mine["ts"]))
        causes.add(theirs["detail"].split(":")[0])
    assert len(own) == 1 and next(iter(own))[:2] == ("missing", "no valid answer from the device")
    assert {"SiteUnreachable", "SiteTimeout"} <= causes  # the operators keep the cause


# -- how often ----------------------------------------------------------------------------------------


def test_the_eleventh_registration_in_an_hour_is_429(client: TestClient, ctx: Context) -> None:
    settings(ctx, site_probe_timeout_seconds=0.05)
    headers, user_id = prosumer(client, ctx)
    for i in range(10):
        # refused ones count too: a scanner gains nothing from bad hosts
        body = site() if i % 2 else site("8.8.8.8")
        assert client.post("/api/v1/sites", json=body, headers=headers).status_code in (201, 422)
    r = client.post("/api/v1/sites", json=site(), headers=headers)
    assert r.status_code == 429 and r.json()["error"] == "TooManySiteRegistrations", r.text
    assert 3500 <= int(r.headers["Retry-After"]) <= 3601
    assert len(stored_sites(ctx)) == 5
    # another user has an allowance of their own; admins have none to spend
    other, _ = prosumer(client, ctx)
    assert client.post("/api/v1/sites", json=site(), headers=other).status_code == 201
    admin = admin_headers(client, ctx)
    for _ in range(11):
        assert client.post("/api/v1/sites", json=site(owner_id=user_id), headers=admin).status_code == 201
    # an hour later the allowance is back
    with Session(ctx.engine) as s:
        s.execute(
            update(LoginThrottle)
            .where(col(LoginThrottle.key) == f"site-register:{user_id}")
            .values(window_start=utcnow() - timedelta(minutes=61))
        )
        s.commit()
    assert client.post("/api/v1/sites", json=site(), headers=headers).status_code == 201


def test_parallel_registrations_spend_the_allowance_exactly_once(ctx: Context) -> None:
    def attempt(_: int) -> bool:
        try:
            count_registration(ctx.engine, 4242, 10)
        except TooManyRequests:
            return False
        return True

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, range(40)))
    assert results.count(True) == 10
    with Session(ctx.engine) as s:
        row = s.get(LoginThrottle, "site-register:4242")
        assert row is not None and row.failures == 10
