"""The schedule runs in one process at a time: the database lease, and the APScheduler worker briefly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from app.context import Context, build_context
from app.market.service import sold_by_site
from app.sites.worker import COLLECTOR_KINDS, LEASE_NAME, CollectorWorker, install_hooks
from common.lease import JobLease, Lease, LeaseLost
from ess_collector.models import SiteReading
from ess_collector.simulator import SimulatorCluster, ThreadedCluster
from tests.ess_collector.harness import add_sites, make_owner
from tests.polling import wait_until
from wallet.purposes import Purpose, TxPurpose
from wallet.relayer import TxStatus

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def clock(t: list[datetime]) -> Callable[[], datetime]:
    return lambda: t[0]


def test_only_one_process_holds_the_lease(clean_db: Engine) -> None:
    a = Lease(clean_db, "job", holder="a", ttl_s=10)
    b = Lease(clean_db, "job", holder="b", ttl_s=10)
    assert a.try_acquire() and not b.try_acquire()
    assert a.try_acquire()  # renewing
    with Session(clean_db) as s:
        a.fence(s)
        s.commit()
    a.release()
    assert not a.held and b.try_acquire() and b.held
    with Session(clean_db) as s, pytest.raises(LeaseLost):
        a.fence(s)  # a paused former holder cannot write beside the new one


def test_an_expired_lease_is_taken_over_and_fences_the_old_holder(clean_db: Engine) -> None:
    now = [T0]
    a = Lease(clean_db, "job", holder="a", ttl_s=10, clock=clock(now))
    b = Lease(clean_db, "job", holder="b", ttl_s=10, clock=clock(now))
    assert a.try_acquire()
    now[0] += timedelta(seconds=9)
    assert not b.try_acquire()
    now[0] += timedelta(seconds=2)  # a stopped renewing (crashed or paused): the lease expired
    assert b.try_acquire()
    with Session(clean_db) as s, pytest.raises(LeaseLost):
        a.fence(s)
    with Session(clean_db) as s:
        row = s.get(JobLease, "job")
        assert row is not None and row.holder == "b"


def _readings(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count(col(SiteReading.id)))).one())


def test_two_workers_poll_once_and_a_standby_takes_over(ctx: Context) -> None:
    settings = ctx.settings.model_copy(
        update={
            "poll_interval_seconds": 1.0,
            "collector_lease_seconds": 3.0,
            "collector_timeout_seconds": 0.5,
        }
    )
    ctx = replace(ctx, settings=settings)
    with ThreadedCluster(SimulatorCluster(2, seed=3, speed=1)) as cluster:
        add_sites(ctx.engine, cluster, make_owner(ctx.engine), datetime.now(UTC))
        one, two = (
            CollectorWorker(ctx, sold_by_site=sold_by_site, holder="one"),
            CollectorWorker(ctx, sold_by_site=sold_by_site, holder="two"),
        )
        one.start()
        try:
            assert wait_until(lambda: one.polls >= 1, timeout=5)
            two.start()
            seen = one.polls
            assert wait_until(lambda: one.polls >= seen + 2, timeout=6)
            assert two.polls == 0  # the standby never polls beside the holder
            one.stop()  # a clean stop releases the lease: the standby takes over at its next check
            assert wait_until(lambda: two.polls >= 1, timeout=5)
        finally:
            one.stop()
            two.stop()
    assert _readings(ctx.engine) == 2 * (one.polls + two.polls)  # every stored poll is one worker's
    with Session(ctx.engine) as s:
        lease = s.get(JobLease, LEASE_NAME)
        assert lease is not None and lease.holder == "two"


def test_a_standalone_collectors_relayer_runs_only_with_the_collector_lease(
    ctx: Context, dev_accounts
) -> None:
    """`essx collector` (twice: a holder and a standby): each process's relayer, for the collector's kinds,
    runs and writes only while its process holds the collector lease."""
    settings = ctx.settings.model_copy(update={"collector_lease_seconds": 3.0})
    contexts = [build_context(settings, engine=ctx.engine, relay_kinds=COLLECTOR_KINDS) for _ in range(2)]
    for c in contexts:
        install_hooks(c)
    a, b = contexts
    one = CollectorWorker(a, sold_by_site=sold_by_site, holder="one", own_relayer=True)
    two = CollectorWorker(b, sold_by_site=sold_by_site, holder="two", own_relayer=True)
    one.start()
    two.start()
    try:
        assert a.relayer.worker.running and not a.relayer.standby
        assert not b.relayer.worker.running and b.relayer.standby
        with Session(ctx.engine) as s, pytest.raises(LeaseLost):
            assert b.relayer.fence is not None
            b.relayer.fence(s)  # a pass of the standby's relayer would write nothing
        one.stop()  # the holder stops: its relayer with it, and the standby takes over, relayer and all
        assert not a.relayer.worker.running
        assert wait_until(lambda: b.relayer.worker.running, timeout=5)
        data = str(b.coin.encodeABI(fn_name="mint", args=[dev_accounts[1].address, 1]))
        with Session(ctx.engine) as s:
            row = b.relayer.prepare(
                s, to=b.coin.address, data=data, purpose=Purpose.of(TxPurpose.meter_anchor, 1)
            )
            s.flush()
            tx_id = row.id
            s.commit()
        assert tx_id is not None
        assert b.relayer.wait(tx_id, timeout=20).status == TxStatus.confirmed
    finally:
        one.stop()
        two.stop()
        for c in contexts:
            c.relayer.stop()
