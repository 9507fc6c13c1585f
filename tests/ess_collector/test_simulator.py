"""Site physics: energy balance, battery limits, PV at night, determinism, fault switches (no network)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ess_collector.simulator import (
    BATTERY_ALARM_CONTACTOR,
    HB_MODULO,
    INVERTER_ALARM_OVER_TEMP,
    RATE_FULL,
    SimClock,
    SiteConfig,
    SiteSimulator,
)
from ess_collector.sunspec import MODELS, Reading

START = datetime(2025, 6, 1, 15, 0, tzinfo=UTC)  # local (KST) midnight


def balance(r: Reading) -> int:
    assert r.load_wh is not None and r.pv_wh is not None and r.import_wh is not None
    assert r.export_wh is not None and r.battery_discharge_wh is not None
    assert r.battery_charge_wh is not None
    return r.pv_wh + r.import_wh - r.export_wh + r.battery_discharge_wh - r.battery_charge_wh - r.load_wh


COUNTERS = ("pv_wh", "load_wh", "import_wh", "export_wh", "battery_charge_wh", "battery_discharge_wh")


@pytest.mark.parametrize("seed", [0, 7])
def test_energy_balance_over_a_simulated_day(seed: int) -> None:
    sim = SiteSimulator(3, seed, start=START)
    first = prev = sim.reading
    integrated = dict.fromkeys(COUNTERS, 0.0)  # Wh from the published powers x time
    steps = [60, 1, 7, 30, 59, 13] * 300  # uneven steps, a little over a day
    for dt in steps:
        r = sim.reading
        pv, load, grid, bat = r.pv_w or 0, r.load_w or 0, r.grid_w or 0, r.battery_w or 0
        assert load == pv + grid + bat  # the instantaneous balance is exact in W
        for key, watts in (("pv_wh", pv), ("load_wh", load), ("import_wh", max(grid, 0))):
            integrated[key] += watts * dt / 3600
        integrated["export_wh"] += max(-grid, 0) * dt / 3600
        integrated["battery_charge_wh"] += max(-bat, 0) * dt / 3600
        integrated["battery_discharge_wh"] += max(bat, 0) * dt / 3600
        assert sim.step(dt)
        now = sim.reading
        assert balance(now) == 0  # exact, in integer Wh, at every update
        for key in COUNTERS:
            assert getattr(now, key) >= getattr(prev, key), key  # lifetime counters never go back
        prev = now
    assert sim.time - START == timedelta(seconds=sum(steps))
    for key in COUNTERS:
        delta = getattr(prev, key) - getattr(first, key)
        assert abs(delta - integrated[key]) <= 3, (key, delta, integrated[key])
    assert integrated["pv_wh"] > 1000 and integrated["battery_charge_wh"] > 100


@pytest.mark.parametrize("seed", [1, 2])
def test_battery_stays_between_reserve_and_full(seed: int) -> None:
    cfg = SiteConfig.from_seed(seed, 0)
    small = SiteConfig(**{**cfg.__dict__, "capacity_wh": 3000, "pv_peak_w": 9000})  # fills and empties daily
    sim = SiteSimulator(0, seed, start=START, config=small)
    socs = []
    for _ in range(2 * 24 * 60):
        sim.step(60)
        soc = sim.reading.soc_pct
        assert soc is not None and Decimal(small.reserve_pct) <= soc <= 100
        socs.append(soc)
    assert min(socs) < small.reserve_pct + 1 and max(socs) > 99  # both limits were actually reached


def test_pv_is_zero_at_night_and_follows_the_sun() -> None:
    cfg = SiteConfig(**{**SiteConfig.from_seed(0, 0).__dict__, "clouds": False})
    sim = SiteSimulator(0, 0, start=START, config=cfg)
    day0 = int(START.timestamp())  # local midnight
    for hour in (0, 1, 2, 3, 4, 21, 22, 23):
        assert sim.profile(day0 + hour * 3600)[0] == 0, hour
    noon = sim.profile(day0 + 12 * 3600)[0]
    assert noon > 0.9 * cfg.pv_peak_w  # June, clear sky
    assert 0 < sim.profile(day0 + 8 * 3600)[0] < noon
    sim.advance_to(START + timedelta(hours=2))
    assert sim.reading.pv_w == 0 and sim.reading.inverter_state == 2  # sleeping
    sim.advance_to(START + timedelta(hours=12))
    assert sim.reading.inverter_state == 4  # MPPT


def test_load_has_morning_and_evening_peaks() -> None:
    sim = SiteSimulator(5, 0, start=START)
    day0 = int(START.timestamp())

    def mean_load(hour: float) -> float:
        return sum(sim.profile(day0 + int(hour * 3600) + m * 60)[1] for m in range(30)) / 30

    assert mean_load(7.5) > 1.5 * mean_load(3) and mean_load(19.5) > 1.5 * mean_load(13)


def test_deterministic_per_seed() -> None:
    def run(seed: int, site: int) -> list[Reading]:
        sim = SiteSimulator(site, seed, start=START)
        out = []
        for _ in range(200):
            sim.step(97)
            out.append(sim.reading)
        return out

    assert run(42, 1) == run(42, 1)
    assert run(42, 1) != run(43, 1) and run(42, 1) != run(42, 2)
    a, b = SiteSimulator(1, 42, start=START), SiteSimulator(1, 42, start=START + timedelta(days=3))
    t = int((START + timedelta(days=4, hours=5)).timestamp())
    assert a.profile(t) == b.profile(t)  # profiles depend on time only, not on how we got there


def test_heartbeat_counts_updates_and_skips_the_sentinel() -> None:
    sim = SiteSimulator(0, 0, start=START)
    sim.heartbeat = HB_MODULO - 2
    assert sim.step(1) and sim.reading.heartbeat == 0xFFFE
    assert sim.step(1) and sim.reading.heartbeat == 0
    assert not sim.advance_to(sim.time + timedelta(milliseconds=300))  # no whole second: no update
    assert sim.reading.heartbeat == 0
    assert sim.reading.device_time == START + timedelta(seconds=2)


def test_fault_switches_on_the_model() -> None:
    sim = SiteSimulator(0, 0, start=START + timedelta(hours=12))  # local noon: PV is producing
    sim.step(60)
    before = sim.reading
    sim.set_fault("frozen")
    sim.step(60)
    assert sim.reading == before and sim.current() != before
    sim.set_fault("frozen", False)
    sim.step(60)
    assert sim.reading.heartbeat != before.heartbeat

    sim.set_fault("inverter_fault")
    r = sim.reading
    assert r.inverter_state == 7 and r.inverter_alarms == INVERTER_ALARM_OVER_TEMP and r.pv_w == 0
    assert r.alarm_code == 1
    sim.set_fault("battery_fault")
    r = sim.reading
    assert r.battery_state == 99 and r.battery_alarms == BATTERY_ALARM_CONTACTOR and r.battery_w == 0
    assert r.alarm_code == 3 and r.load_w == r.grid_w  # no PV, no battery: the grid carries the load
    sim.clear_faults()
    assert sim.reading.inverter_state == 4 and sim.reading.battery_state == 3

    old = sim.reading
    sim.set_fault("counter_reset")
    new = sim.reading
    for key in COUNTERS:
        assert 0 < getattr(new, key) < 10 < getattr(old, key), key
    sim.step(600)
    assert balance(sim.reading) == 0

    with pytest.raises(ValueError):
        sim.set_fault("meltdown")


def test_spike_is_served_for_the_requested_number_of_polls() -> None:
    sim = SiteSimulator(0, 0, start=START)
    sim.set_fault("spike", polls=2)
    w = 40084 - 40000
    served = [sim.serve(40000, 122)[w] for _ in range(3)]
    assert served[:2] == [sim.spike_w] * 2 and served[2] == sim.reading.pv_w
    assert sim.spike_w > 1.2 * sim.config.pv_peak_w
    assert sim.serve(40122, 107)  # reads that do not cover 103.W do not consume the spike


def test_sim_clock_accelerates() -> None:
    clock = SimClock(START, speed=3600)
    time.sleep(0.05)
    elapsed = (clock.now() - START).total_seconds()
    assert 150 < elapsed < 3600


# ---- model 124 storage controls ------------------------------------------------------------------------

_M124 = MODELS[124]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 5),
    st.lists(
        st.tuples(
            st.integers(0, 3),  # StorCtl_Mod
            st.integers(-RATE_FULL, RATE_FULL),  # InWRte
            st.integers(-RATE_FULL, RATE_FULL),  # OutWRte
            st.integers(0, 1200),  # reversion timeout, s
            st.integers(1, 900),  # then run this long
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_controls_keep_energy_balance_and_battery_limits(site: int, commands: list[tuple[int, ...]]) -> None:
    cfg = SiteConfig.from_seed(4, site)
    sim = SiteSimulator(site, 4, start=START + timedelta(hours=site * 4), config=cfg)
    prev = sim.reading
    for mod, in_rte, out_rte, revert, run in commands:
        rates = [out_rte & 0xFFFF, in_rte & 0xFFFF, 0, revert]
        assert sim.write(_M124["OutWRte"].address, rates) is None
        assert sim.write(_M124["StorCtl_Mod"].address, [mod]) is None
        lo = -(in_rte * cfg.max_charge_w // RATE_FULL) if mod & 1 else -cfg.max_charge_w
        hi = out_rte * cfg.max_charge_w // RATE_FULL if mod & 2 else cfg.max_discharge_w
        r = sim.reading
        assert r.battery_w is not None and r.soc_pct is not None
        if Decimal(cfg.reserve_pct) + 2 < r.soc_pct < 98 and lo <= hi:  # away from the battery's limits
            assert max(lo, -cfg.max_charge_w) <= r.battery_w <= min(hi, cfg.max_discharge_w)
        for _ in range(0, run, 60):
            sim.step(min(60, run))
            now = sim.reading
            assert balance(now) == 0  # exact in Wh, whatever the battery is told
            assert all(getattr(now, k) >= getattr(prev, k) for k in COUNTERS)
            assert now.soc_pct is not None and Decimal(cfg.reserve_pct) <= now.soc_pct <= 100
            assert now.battery_w is not None and -cfg.max_charge_w <= now.battery_w <= cfg.max_discharge_w
            assert now.load_w == (now.pv_w or 0) + (now.grid_w or 0) + now.battery_w
            prev = now
    assert sim.controls.rvrt_tms == commands[-1][3]


def test_reversion_happens_on_its_second() -> None:
    sim = SiteSimulator(2, 5, start=datetime(2025, 6, 1, 3, 0, tzinfo=UTC))
    assert sim.battery_w < 0  # noon: charging from PV
    assert sim.write(_M124["OutWRte"].address, [RATE_FULL, (-3000) & 0xFFFF, 0, 125]) is None
    assert sim.write(_M124["StorCtl_Mod"].address, [1]) is None
    forced = sim.config.max_charge_w * 3000 // RATE_FULL
    assert sim.battery_w == forced
    sim.step(124)
    assert sim.battery_w == forced and sim.controls.mod == 1
    sim.step(1)
    assert sim.controls.mod == 0 and sim.controls.in_w_rte == RATE_FULL and sim.battery_w < 0
    # a timeout of 0 never reverts
    assert sim.write(_M124["InOutWRte_RvrtTms"].address, [0]) is None
    assert sim.write(_M124["StorCtl_Mod"].address, [1]) is None
    sim.step(3600)
    assert sim.controls.mod == 1


def test_control_faults_refuse_or_ignore() -> None:
    sim = SiteSimulator(2, 5, start=datetime(2025, 6, 1, 3, 0, tzinfo=UTC))
    sim.set_fault("control_refused")
    assert sim.write(_M124["StorCtl_Mod"].address, [1]) == 4
    assert sim.controls.mod == 0
    sim.clear_faults()
    sim.set_fault("control_ignored")
    assert sim.write(_M124["InWRte"].address, [(-5000) & 0xFFFF]) is None
    assert sim.write(_M124["StorCtl_Mod"].address, [1]) is None
    assert sim.controls.mod == 1 and sim.battery_w < 0  # accepted, read back, not followed
    sim.clear_faults()
    assert sim.battery_w > 0  # following again
