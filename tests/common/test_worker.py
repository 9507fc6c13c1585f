"""The worker base (common/worker.py) as pure logic: pacing, failures and back-off, the fence, wake-up,
stop, and the lease keeper's gains and losses (a fake lease: no database, no clock)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from common.lease import LeaseLost
from common.worker import LeaseKeeper, Pacing, Worker

WAIT = 10  # seconds a test waits for a thread before failing; never a measured duration


def test_pacing_idle_busy_and_a_doubling_capped_back_off() -> None:
    p = Pacing(2.0, busy_interval=0.1, backoff_first=0.5, backoff_max=3.0)
    assert p.next_wait(busy=False, failures=0) == 2.0
    assert p.next_wait(busy=True, failures=0) == 0.1
    assert [p.next_wait(busy=True, failures=n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.next_wait(busy=False, failures=10**6) == 3.0  # no overflow after a long outage


def test_a_failing_step_is_logged_the_others_still_run_and_success_resets_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    broken = [True]

    def flaky() -> None:
        calls.append("flaky")
        if broken[0]:
            raise RuntimeError("node unreachable")

    def after() -> int:
        calls.append("after")
        return 1

    w = Worker("w", [flaky, after], Pacing(1.0))
    with caplog.at_level(logging.ERROR, logger="common.worker"):
        assert w.run_pass() is True and w.run_pass() is True
    assert calls == ["flaky", "after", "flaky", "after"] and w.failures == 2
    assert [r.exc_info is not None and "flaky failed" in r.getMessage() for r in caplog.records] == [
        True,
        True,
    ]
    assert w.pacing.next_wait(busy=True, failures=w.failures) == 1.0  # backing off: 0.5, then 1.0
    broken[0] = False
    assert w.run_pass() is True and w.failures == 0


def test_a_refused_fence_skips_the_later_steps_of_the_pass() -> None:
    calls: list[str] = []

    def fenced() -> None:
        calls.append("fenced")
        raise LeaseLost("another process holds it")

    w = Worker("w", [fenced, lambda: calls.append("writes")], Pacing(1.0))
    assert w.run_pass() is False
    assert calls == ["fenced"] and w.lease_lost and w.failures == 1


def test_a_wake_runs_a_pass_now_and_stop_ends_the_thread() -> None:
    passes = threading.Semaphore(0)
    w = Worker("w", [passes.release], Pacing(3600.0))  # without a wake-up, one pass an hour
    w.start()
    try:
        assert passes.acquire(timeout=WAIT)  # the first pass runs at start
        w.kick()
        assert passes.acquire(timeout=WAIT)  # the wake-up, not the interval, ran the second
    finally:
        w.stop()
    assert not w.running and w.stopping
    w.start()  # a stopped worker starts again
    assert passes.acquire(timeout=WAIT)
    w.stop()
    assert not w.running


def test_a_worker_with_a_min_gap_passes_a_gap_plus_an_interval_apart() -> None:
    """The market spaces its full passes an interval apart from their starts (app/market/worker.py): its
    idle passes come a gap plus an interval apart, never a hair under an interval."""
    interval, gap = 0.3, 0.05
    starts: list[float] = []
    done = threading.Event()

    def step() -> None:
        starts.append(time.monotonic())
        if len(starts) == 4:
            done.set()

    w = Worker("market", [step], Pacing(interval), min_gap=gap)
    w.start()
    try:
        assert done.wait(WAIT)
    finally:
        w.stop()
    assert all(b - a >= interval + gap for a, b in pairwise(starts)), starts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names in /proc: Linux")
def test_a_workers_thread_carries_its_name_in_the_operating_system() -> None:
    """bench/bench_idle.py reads each loop's CPU by thread name from /proc (cut to 15 bytes there)."""
    names: list[str] = []
    done = threading.Event()

    def step() -> None:
        task = Path(f"/proc/self/task/{threading.get_native_id()}/comm")
        names.append(task.read_text().strip())
        done.set()

    w = Worker("transfer-batcher", [step], Pacing(3600.0))
    w.start()
    try:
        assert done.wait(WAIT)
    finally:
        w.stop()
    assert names == ["transfer-batche"]


def test_a_worker_keeps_looping_while_its_steps_fail() -> None:
    seen = threading.Semaphore(0)

    def failing() -> None:
        seen.release()
        raise RuntimeError("still down")

    w = Worker("w", [failing], Pacing(3600.0, backoff_first=0.0, backoff_max=0.0))
    w.start()
    try:
        for _ in range(3):
            assert seen.acquire(timeout=WAIT)
    finally:
        w.stop()
    assert w.failures >= 3


class FakeLease:
    """What the keeper needs of ``common.lease.Lease``; ``answers`` are the next try_acquire results."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.name, self.holder, self.ttl = "job", "me", timedelta(seconds=3)
        self.answers = list(answers)
        self.released = 0

    def try_acquire(self) -> bool:
        answer = self.answers.pop(0) if self.answers else False
        if isinstance(answer, Exception):
            raise answer
        return answer

    def release(self) -> None:
        self.released += 1


def test_the_keeper_reports_gains_and_losses_once_each() -> None:
    events: list[str] = []
    lease = FakeLease(True, True, RuntimeError("database unreachable"), False, True)
    keeper = LeaseKeeper(lease, lambda: events.append("+"), lambda: events.append("-"), every_s=3600)  # type: ignore[arg-type]
    keeper.check()
    keeper.check()  # a renewal: no second gain
    keeper.check()  # cannot prove it still holds the lease: lost
    keeper.check()
    assert events == ["+", "-"] and not keeper.leading
    keeper.check()
    assert events == ["+", "-", "+"] and keeper.leading
    keeper.stop()  # a clean stop is a loss, and gives the lease up
    assert events == ["+", "-", "+", "-"] and lease.released == 1


def test_the_keeper_leads_at_start_in_the_callers_thread() -> None:
    gained = threading.Event()
    keeper = LeaseKeeper(FakeLease(True), gained.set, lambda: None, every_s=3600)  # type: ignore[arg-type]
    keeper.start()
    try:
        assert gained.is_set() and keeper.leading
    finally:
        keeper.stop()
