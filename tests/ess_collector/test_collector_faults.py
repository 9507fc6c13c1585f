"""Every simulator fault against the real collector over TCP: no zero readings, no phantom energy,
faults that open and close, and incomplete (never fabricated) slots for a site that was away."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from ess_collector.models import SiteReading
from ess_collector.validation import ENERGY
from tests.ess_collector.harness import START, Harness, accepted_energy, counters, deltas, with_cfg


@pytest.fixture
def h(clean_db: Engine) -> Iterator[Harness]:
    harness = Harness(clean_db, 1, cfg=with_cfg(timeout_s=0.15))
    yield harness
    harness.close()


def assert_no_zero_and_no_phantom(rows: list[SiteReading], *, exact: bool = True) -> None:
    """Missing values are null, never 0; counted energy never exceeds what the counters moved."""
    for r in rows:
        if r.quality == "missing" and r.heartbeat is None:
            assert all(getattr(r, f) is None for f in (*ENERGY, "pv_w", "load_w", "grid_w", "battery_w"))
        else:
            assert all(getattr(r, f) for f in ENERGY), f"a zero counter stored: {r}"
        if r.accepted and r.interval_start is not None:
            assert all(d >= 0 for d in deltas(r))
    first = next(r for r in rows if r.quality in ("ok", "reset"))  # the baseline counting starts from
    last = [r for r in rows if r.accepted][-1]
    moved = tuple(b - a for a, b in zip(counters(first), counters(last), strict=True))
    counted = accepted_energy(rows)
    if exact:
        assert counted == moved  # every Wh counted once: none lost, none invented
    else:
        assert all(c <= m for c, m in zip(counted, moved, strict=True))


def fault_log(h: Harness) -> list[tuple[str, bool]]:
    return [(f.kind, f.closed_at is None) for f in h.faults()]


def test_frozen_device_is_stale_then_bridged_exactly(h: Harness) -> None:
    h.poll(2)
    h.cluster.set_fault(0, "frozen")
    h.poll(4)
    assert [r.quality for r in h.readings()[-4:]] == ["stale"] * 4
    assert fault_log(h) == [("stale", True)] and h.site().status == "fault"
    h.cluster.set_fault(0, "frozen", False)
    h.poll(2)
    rows = h.readings()
    assert rows[-2].quality == "ok" and rows[-2].interval_start == rows[1].ts  # spans the frozen time
    assert fault_log(h) == [("stale", False)] and h.site().status == "online"
    assert_no_zero_and_no_phantom(rows)


def test_slow_device_times_out_backs_off_and_recovers(h: Harness) -> None:
    h.poll(2)
    h.cluster.set_fault(0, "slow", delay_s=0.4)
    reports = h.poll(6)
    assert [r.polled for r in reports] == [1, 1, 0, 1, 0, 0]  # backoff: skip 0, 1, 3 polls
    missing = [r for r in h.readings() if r.quality == "missing"]
    assert len(missing) == 3 and all("SiteTimeout" in (r.detail or "") for r in missing)
    assert fault_log(h) == [("comm_lost", True)] and h.site().status == "offline"
    h.cluster.set_fault(0, "slow", False)
    h.poll(3)
    assert fault_log(h) == [("comm_lost", False)] and h.site().status == "online"
    assert_no_zero_and_no_phantom(h.readings())


def test_busy_device_is_missing_not_zero(h: Harness) -> None:
    h.poll(2)
    h.cluster.set_fault(0, "busy")
    h.poll(4)
    missing = [r for r in h.readings() if r.quality == "missing"]
    assert len(missing) == 3 and all("SiteBusy" in (r.detail or "") for r in missing)
    assert fault_log(h) == [("comm_lost", True)]
    h.cluster.set_fault(0, "busy", False)
    h.poll(4)
    assert fault_log(h) == [("comm_lost", False)]
    assert_no_zero_and_no_phantom(h.readings())


def test_counter_reset_is_rebaselined_and_its_slot_incomplete(h: Harness) -> None:
    h.poll_until(START + timedelta(minutes=2))
    h.cluster.set_fault(0, "counter_reset")
    h.poll_until(START + h.cfg.slot * 2 + timedelta(minutes=2))
    rows = h.readings()
    (reset,) = [r for r in rows if r.quality == "reset"]
    after = rows[rows.index(reset) + 1]
    assert after.accepted and after.interval_start == reset.ts  # counted from the new counters
    kinds = [e.kind for e in h.events()]
    assert kinds.count("counter_reset") == 1 and kinds.count("rebaseline") == 1
    assert_no_zero_and_no_phantom(rows[rows.index(reset) :])
    h.aggregate()
    status = {s.slot_start: s.status for s in h.slots()}
    assert status[START] == "incomplete"  # the energy between the last good reading and the reset is unknown
    assert status[START + h.cfg.slot] == "complete"


def test_out_of_range_spike_is_flagged_and_bridged(h: Harness) -> None:
    h.poll(2)
    h.cluster.set_fault(0, "spike", polls=2)
    h.poll(4)
    rows = h.readings()
    spikes = [r for r in rows if r.quality == "out_of_range"]
    assert len(spikes) == 2 and all(r.pv_w == h.sims[0].spike_w and not r.accepted for r in spikes)
    assert [e.kind for e in h.events()].count("out_of_range") == 2
    assert_no_zero_and_no_phantom(rows)


@pytest.mark.parametrize(("fault", "power"), [("inverter_fault", "pv_w"), ("battery_fault", "battery_w")])
def test_device_fault_opens_and_closes(h: Harness, fault: str, power: str) -> None:
    h.poll(2)
    h.cluster.set_fault(0, fault)
    h.poll(2)
    rows = h.readings()
    assert rows[-1].quality == "ok" and getattr(rows[-1], power) == 0  # a real zero, reported as such
    assert fault_log(h) == [(fault, True)] and h.site().status == "fault"
    h.cluster.set_fault(0, fault, False)
    h.poll(1)
    assert fault_log(h) == [(fault, False)] and h.site().status == "online"
    assert_no_zero_and_no_phantom(h.readings())


def test_offline_site_yields_incomplete_slots_never_fabricated_ones(h: Harness) -> None:
    slot = h.cfg.slot
    h.poll_until(START + timedelta(minutes=1))
    h.cluster.set_fault(0, "offline")
    reports = []
    while h.now + timedelta(seconds=5) <= START + 2 * slot + timedelta(minutes=1):
        reports += h.poll()
    assert sum(r.polled for r in reports) < len(reports) / 2  # backing off: a dead site costs little
    assert fault_log(h) == [("comm_lost", True)] and h.site().status == "offline"
    h.cluster.set_fault(0, "offline", False)
    h.poll_until(START + 4 * slot + timedelta(minutes=2))
    assert fault_log(h) == [("comm_lost", False)]
    h.aggregate()
    by_slot = {s.slot_start: s for s in h.slots()}
    assert by_slot[START].status == "incomplete" and by_slot[START].pv_wh is not None  # one measured minute
    away = by_slot[START + slot]
    assert away.status == "incomplete" and away.good_polls == 0
    assert all(getattr(away, f) is None for f in ENERGY)  # nothing measured: nothing invented
    assert by_slot[START + 2 * slot].status == "incomplete"
    assert by_slot[START + 3 * slot].status == "complete"
    assert_no_zero_and_no_phantom(h.readings())
