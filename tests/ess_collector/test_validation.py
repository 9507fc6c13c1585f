"""Every validation rule on synthetic readings: quality flags, resets, glitches, wraps, ranges, balance."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ess_collector import faults
from ess_collector.config import CollectorConfig
from ess_collector.sunspec import Reading
from ess_collector.validation import (
    MISSING,
    OK,
    OUT_OF_RANGE,
    RESET,
    STALE,
    Limits,
    SiteState,
    assess,
    remember,
)

CFG = CollectorConfig()
T0 = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)
LIMITS = Limits.for_site(5000, 10_000, CFG)


def reading(t: int, *, e: int | None = None, hb: int | None = None, **kw: object) -> Reading:
    """A balanced reading at T0 + t s; pv and load counters advanced by ``e`` Wh (default t: 3.6 kW)."""
    e = t if e is None else e
    base = dict(
        pv_w=3000,
        load_w=1500,
        grid_w=-500,
        battery_w=-1000,
        soc_pct=Decimal("55.0"),
        pv_wh=100_000 + e,
        load_wh=80_000 + e,  # only pv and load move, so load = pv + import - export + ... holds
        import_wh=5_000,
        export_wh=10_000,
        battery_charge_wh=20_000,
        battery_discharge_wh=15_000,
        heartbeat=t if hb is None else hb,
        device_time=T0 + timedelta(seconds=t),
        inverter_state=4,
        battery_state=3,
        alarm_code=0,
    )
    return Reading(**(base | kw))  # type: ignore[arg-type]


def feed(state: SiteState, t: int, r: Reading, cfg: CollectorConfig = CFG):  # type: ignore[no-untyped-def]
    v = assess(state, r, T0 + timedelta(seconds=t), cfg)
    remember(state, r, v)
    return v


def fresh() -> SiteState:
    return SiteState(1, LIMITS)


def test_first_reading_is_the_baseline_and_the_next_carries_the_interval() -> None:
    st = fresh()
    v0 = feed(st, 0, reading(0))
    assert v0.quality == OK and v0.accepted and v0.interval_start is None and v0.deltas is None
    v1 = feed(st, 5, reading(5))
    assert v1.quality == OK and v1.accepted and v1.interval_start == T0
    assert v1.deltas == (5, 5, 0, 0, 0, 0)


def test_missing_counter_is_missing_never_zero() -> None:
    st = fresh()
    feed(st, 0, reading(0))
    v = feed(st, 5, replace(reading(5), load_wh=None))
    assert v.quality == MISSING and not v.accepted and "load_wh" in (v.detail or "")
    assert st.baseline is not None and st.baseline.ts == T0  # the baseline did not move


def test_heartbeat_not_advancing_is_stale_and_opens_a_fault_after_n() -> None:
    st = fresh()
    feed(st, 0, reading(0, hb=7))
    changes = []
    for t in (5, 10, 15):
        v = feed(st, t, reading(0, hb=7))
        assert v.quality == STALE and not v.accepted
        changes += faults.after_answer(st, reading(0, hb=7), v, CFG)
    assert [c.kind for c in changes] == ["stale"] and changes[0].open
    v = feed(st, 20, reading(20, hb=8))
    assert v.quality == OK and v.accepted and v.interval_start == T0  # bridges the stale readings
    closes = faults.after_answer(st, reading(20, hb=8), v, CFG)
    assert [(c.kind, c.open) for c in closes] == [("stale", False)]


def test_without_heartbeat_the_device_clock_decides_staleness() -> None:
    st = fresh()
    feed(st, 0, reading(0, heartbeat=None))
    same_clock = reading(5, heartbeat=None, device_time=T0)
    assert feed(st, 5, same_clock).quality == STALE


def test_counter_reset_is_rebaselined_on_confirmation_never_subtracted() -> None:
    st = fresh()
    feed(st, 0, reading(0))
    low = reading(
        5, pv_wh=3, load_wh=3, import_wh=1, export_wh=1, battery_charge_wh=1, battery_discharge_wh=1
    )
    v = feed(st, 5, low)
    assert v.quality == RESET and not v.accepted and v.events[0][0] == "counter_reset"
    assert st.candidate is not None and st.baseline is not None and st.baseline.ts == T0
    after = replace(low, pv_wh=8, load_wh=8, heartbeat=99)
    v = feed(st, 10, after)
    assert v.quality == OK and v.accepted and v.interval_start == T0 + timedelta(seconds=5)
    assert v.deltas == (5, 5, 0, 0, 0, 0) and v.events[0][0] == "rebaseline"
    assert all(d >= 0 for d in v.deltas)


def test_transient_backwards_glitch_keeps_the_old_baseline() -> None:
    st = fresh()
    feed(st, 0, reading(0))
    feed(st, 5, replace(reading(5), pv_wh=10, load_wh=10))  # a torn or zeroed value
    v = feed(st, 10, reading(10))
    assert v.accepted and v.interval_start == T0 and v.events[0][0] == "counter_glitch"
    assert v.deltas == (10, 10, 0, 0, 0, 0)  # counted once from the old baseline: no phantom energy


def test_acc32_wrap_is_a_delta_not_a_reset() -> None:
    st = fresh()
    top = 2**32 - 3
    feed(st, 0, reading(0, pv_wh=top, load_wh=top - 20_000))
    v = feed(st, 60, reading(60, pv_wh=7, load_wh=top - 20_000 + 10))  # +10 Wh across the wrap
    assert v.quality == OK and v.deltas is not None and v.deltas[0] == 10


def test_power_spike_and_soc_out_of_range() -> None:
    st = fresh()
    feed(st, 0, reading(0))
    v = feed(st, 5, reading(5, pv_w=LIMITS.pv_w + 1))
    assert v.quality == OUT_OF_RANGE and not v.accepted and "pv_w" in (v.detail or "")
    v = feed(st, 10, reading(10, soc_pct=Decimal("100.1")))
    assert v.quality == OUT_OF_RANGE
    v = feed(st, 15, reading(15))
    assert v.accepted and v.interval_start == T0  # both rejected readings bridged


def test_energy_delta_above_max_power_times_elapsed_is_out_of_range() -> None:
    st = fresh()
    feed(st, 0, reading(0))
    # 5 kW nameplate x 1.2 for 5 s = 8.3 Wh: 50 Wh in 5 s is impossible
    v = feed(st, 5, reading(5, pv_wh=100_050, load_wh=80_050))
    assert v.quality == OUT_OF_RANGE and "pv_wh" in (v.detail or "")


def test_imbalance_is_out_of_range_and_opens_a_fault_after_n() -> None:
    st = fresh()
    feed(st, 0, reading(0))
    opened = []
    for t in (60, 120, 180):
        r = reading(t, load_wh=80_000 + 2 * t)  # load grows twice as fast as its sources allow
        v = feed(st, t, r)
        assert v.quality == OUT_OF_RANGE and v.imbalance
        opened += faults.after_answer(st, r, v, CFG)
    assert [c.kind for c in opened] == ["imbalance"]


def test_a_device_update_between_the_reads_of_one_poll_is_not_an_imbalance() -> None:
    """The three model reads of a poll take time; a device that updates in between serves counters that
    far apart, at the powers it reports (6 kW of flows here). Accelerated demo time makes the span long."""
    fast = replace(CFG, clock_speed=720)
    skewed = {"load_wh": 80_000 + 60 + 25}  # 25 Wh more load than its sources over the interval

    def verdict(wall_s: float, cfg: CollectorConfig, **kw: int):  # type: ignore[no-untyped-def]
        st = fresh()
        feed(st, 0, reading(0), cfg)
        return feed(st, 60, replace(reading(60, **kw), read_wall_s=wall_s), cfg)

    v = verdict(0.02 / 720, fast, **skewed)  # reads 20 ms apart in energy time: no room for 25 Wh
    assert v.quality == OUT_OF_RANGE and v.imbalance
    assert verdict(0.02, fast, **skewed).quality == OK  # 20 ms of wall time at 720x: 24 Wh of room
    v = verdict(0.02, fast, load_wh=80_000 + 60 + 100)  # more than the span explains
    assert v.quality == OUT_OF_RANGE and v.imbalance
    # a device that answers slowly does not buy itself tolerance: at most 1 s of reads counts
    v = verdict(4.2, CFG, **skewed)
    assert v.quality == OUT_OF_RANGE and v.imbalance


def test_device_fault_states_open_and_close_faults() -> None:
    st = fresh()
    r = reading(0, inverter_state=7, inverter_alarms=1 << 7, battery_state=99, alarm_code=3)
    v = feed(st, 0, r)
    assert v.quality == OK  # the data is valid; the device says it is in fault
    kinds = {(c.kind, c.open) for c in faults.after_answer(st, r, v, CFG)}
    assert kinds == {("inverter_fault", True), ("battery_fault", True)}
    r = reading(5)
    v = feed(st, 5, r)
    kinds = {(c.kind, c.open) for c in faults.after_answer(st, r, v, CFG)}
    assert kinds == {("inverter_fault", False), ("battery_fault", False)}


def test_comm_lost_after_n_failures_and_status() -> None:
    st = fresh()
    assert faults.site_status(st) == "unknown"
    for n in (1, 2):
        st.failures = n
        assert faults.after_failure(st, CFG) == []
    st.failures = 3
    (change,) = faults.after_failure(st, CFG)
    assert change.kind == "comm_lost" and change.open and faults.site_status(st) == "offline"
