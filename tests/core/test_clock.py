"""The energy clock: the wall clock in production, a faster shared clock in demos."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from app.core.config import Settings
from common import clock
from ess_collector.config import CollectorConfig
from ess_collector.simulator import SimClock


@pytest.fixture(autouse=True)
def _wall_clock_after():
    yield
    clock.configure()


def test_default_is_the_wall_clock() -> None:
    clock.configure()
    before = datetime.now(UTC)
    now = clock.now()
    assert now.tzinfo is not None
    assert before <= now <= datetime.now(UTC)
    assert not clock.current().simulated


def test_simulated_time_runs_speed_times_faster_from_start() -> None:
    start = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
    anchor = time.time() - 10  # ten wall seconds ago
    clock.configure(720, start, anchor)
    elapsed = clock.now() - start
    assert timedelta(seconds=7200) <= elapsed < timedelta(seconds=7200 + 720 * 5)


def test_processes_with_the_same_settings_agree_with_the_simulator() -> None:
    """The service and the simulator (another process in a demo) compute the same energy time."""
    start, anchor = datetime(2026, 11, 21, 1, 0, tzinfo=UTC), time.time()
    service = clock.configure(720, start, anchor)
    sites = SimClock(start, 720, anchor=anchor)
    assert abs((service.now() - sites.now()).total_seconds()) < 720 * 0.05


def test_settings_configure_the_clock() -> None:
    start = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    s = Settings(clock_speed=60, clock_start=start, clock_anchor=time.time())
    c = clock.configure_from(s)
    assert c.speed == 60 and c.start == start


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_a_speed_that_is_not_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        clock.configure(bad, datetime.now(UTC))


def test_rejects_a_naive_start() -> None:
    with pytest.raises(ValueError, match="time zone"):
        clock.configure(10, datetime(2026, 1, 1))


def test_collector_expects_polls_per_energy_time() -> None:
    """At 720x a 0.5 s poll interval is 6 energy minutes: 10 polls in a 60-minute slot."""
    assert CollectorConfig(slot_minutes=60, poll_interval_s=0.5, clock_speed=720).expected_polls == 10
    assert CollectorConfig(slot_minutes=15, poll_interval_s=5).expected_polls == 180
