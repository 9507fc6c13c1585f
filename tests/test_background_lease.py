"""The background lease: one process runs the relayer, batcher, indexer and market loop; the others
serve requests and leave that work to it; a dead holder is replaced once its lease has expired.

Two "processes" here are two contexts (each its own relayer and background workers) on one database
and one chain; tests/test_multi_worker.py does the same with real `essx run` worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.context import Context, build_context
from app.core.config import Settings
from app.main import BackgroundWorkers, create_app
from common.lease import Lease, LeaseLost
from common.worker import LeaseKeeper
from tests.api.helpers import admin_headers, idem
from tests.api.wallet_helpers import PIN, fund, user_with_custodial_wallet, wait_final
from tests.polling import TRANSFER_STEPS, wait_until


def test_keeper_leads_alone_and_a_standby_takes_over_from_a_dead_holder(clean_db: Engine) -> None:
    events: list[str] = []
    a_lease = Lease(clean_db, "job", ttl_s=1.0)
    b_lease = Lease(clean_db, "job", ttl_s=1.0)
    # `a` renews once an hour: after its first acquisition it behaves like a process that died
    a = LeaseKeeper(a_lease, lambda: events.append("a+"), lambda: events.append("a-"), every_s=3600)
    b = LeaseKeeper(b_lease, lambda: events.append("b+"), lambda: events.append("b-"), every_s=0.1)
    a.start()
    b.start()
    try:
        assert a.leading and not b.leading and events == ["a+"]
        assert wait_until(lambda: b.leading, timeout=10, every=0.05)
        assert events == ["a+", "b+"]
        with Session(clean_db) as session, pytest.raises(LeaseLost):
            a_lease.fence(session)  # the old holder's writes are refused from now on
    finally:
        b.stop()
        a.stop()
    assert events[-2:] == ["b-", "a-"]


@pytest.fixture
def second_ctx(settings: Settings, clean_db: Engine, ctx: Context) -> Iterator[Context]:
    """Another API process: its own relayer and workers, the same database and chain."""
    other = build_context(settings, engine=clean_db)
    yield other
    other.relayer.stop()


def test_follower_leaves_relaying_to_the_leader_and_takes_over_when_it_stops(
    client: TestClient, ctx: Context, second_ctx: Context
) -> None:
    admin = admin_headers(client, ctx)
    _sender, headers, address = user_with_custodial_wallet(client)
    fund(client, admin, address, "10")
    sink = Account.create().address
    with TestClient(create_app(ctx=second_ctx)) as follower:
        # `client` started first and holds the lease; the second process is on standby
        assert second_ctx.relayer.standby and second_ctx.relayer.fence is None
        assert not ctx.relayer.standby and ctx.relayer.fence is not None
        r = follower.post(
            "/api/v1/transfers", json={"to": sink, "amount": "1"}, headers={**headers, **idem()}
        )
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        r = follower.post(f"/api/v1/transfers/{tid}/authorize", json={"pin": PIN}, headers=headers)
        assert r.status_code == 200, r.text
        done = wait_final(follower, headers, tid)  # relayed by the leader's batcher, found by polling
        assert done["status"] == "confirmed" and [s["kind"] for s in done["steps"]] == TRANSFER_STEPS, done

        client.__exit__(None, None, None)  # the leader stops cleanly and gives the lease up
        assert wait_until(lambda: not second_ctx.relayer.standby, timeout=10, every=0.05)
        assert second_ctx.relayer.fence is not None
        r = follower.post(
            "/api/v1/transfers", json={"to": sink, "amount": "2"}, headers={**headers, **idem()}
        )
        tid = r.json()["id"]
        r = follower.post(f"/api/v1/transfers/{tid}/authorize", json={"pin": PIN}, headers=headers)
        assert r.status_code == 200, r.text
        done = wait_final(follower, headers, tid)
        assert done["status"] == "confirmed" and [s["kind"] for s in done["steps"]] == TRANSFER_STEPS, done
    assert ctx.coin.functions.balanceOf(address).call() == 7 * 10**18


def test_a_relayer_that_lost_the_lease_writes_nothing(ctx: Context, clean_db: Engine) -> None:
    workers = BackgroundWorkers(ctx, ttl_s=5.0)
    workers.start()
    try:
        assert workers.leading
        intruder = Lease(clean_db, "essx-background", ttl_s=60.0)
        with clean_db.begin() as conn:  # the lease expires behind our back (a long pause)...
            conn.exec_driver_sql("UPDATE job_leases SET expires_at = '2000-01-01 00:00:00+00:00'")
        assert intruder.try_acquire()  # ...and another process takes it
        with Session(clean_db) as session, pytest.raises(LeaseLost):
            assert ctx.relayer.fence is not None
            ctx.relayer.fence(session)
    finally:
        workers.stop()
    assert not ctx.relayer.standby and ctx.batcher_wake is None


def test_after_losing_the_lease_the_workers_commits_are_refused_until_the_process_stops(
    ctx: Context, clean_db: Engine
) -> None:
    """A worker still finishing a slow pass when its process stops leading must not commit beside the new
    leader: the fences are not removed on loss, they refuse."""
    workers = BackgroundWorkers(ctx, ttl_s=5.0)
    workers.start()
    try:
        assert workers.leading
        workers._follow()  # what the keeper does when a renewal fails
        with Session(clean_db) as session, pytest.raises(LeaseLost):
            ctx.commit_background(session)  # the batcher's and the market loop's commit
        with Session(clean_db) as session, pytest.raises(LeaseLost):
            assert ctx.relayer.fence is not None
            ctx.relayer.fence(session)
    finally:
        workers.stop()
    assert ctx.relayer.fence is None and ctx.background_fence is None  # inline and unfenced again
