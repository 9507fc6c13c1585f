"""The automatic trader's planning rules (app/trading/planning.py): sells the site can deliver, buys it
will import, and repricing with hysteresis. Pure arithmetic, checked against the forecast's reference
model in exact fractions (tests/ess_collector/test_forecast.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.trading import planning
from app.trading.planning import (
    LOAD_SELL_MARGIN_PCT,
    Measured,
    SlotInput,
    keep_live,
    plan_site,
    sell_outlook,
)
from ess_collector.forecast import forecast, stored_after
from tests.ess_collector.test_forecast import battery, committed, execute

T0 = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
HOUR = 3600


def slots(n: int, pv: int = 0, load: int = 500, **kw: int | bool) -> list[SlotInput]:
    return [SlotInput(T0 + timedelta(hours=k), pv, load, **kw) for k in range(n)]  # type: ignore[arg-type]


def test_sells_leave_the_load_margin_and_stop_at_the_power_limit() -> None:
    big = battery("100", capacity=20_000, power=3_000)
    plan = plan_site(big, slots(1, pv=0, load=1_000), HOUR)
    # the battery gives at most 3000 W for an hour; the household's 1000 Wh (+ margin) come first
    assert plan[0].sell_wh == 3_000 - 1_000 * (100 + LOAD_SELL_MARGIN_PCT) // 100
    assert plan[0].buy_wh == 0


def test_a_measured_higher_load_and_a_cloudy_sky_sell_less() -> None:
    b = battery("60")
    run = slots(2, pv=2_000, load=400)
    clear = plan_site(b, run, HOUR)
    loaded = plan_site(b, run, HOUR, measured=Measured(pv_w=2_000, load_w=1_500, expected_pv_w=2_000))
    cloudy = plan_site(b, run, HOUR, measured=Measured(pv_w=500, load_w=400, expected_pv_w=2_000))
    assert sum(p.sell_wh for p in loaded) < sum(p.sell_wh for p in clear)
    assert sum(p.sell_wh for p in cloudy) < sum(p.sell_wh for p in clear)
    assert cloudy[0].pv_wh == 2_000 * 25 * 80 // 10_000  # a quarter of the sky, less the margin


def test_before_sunrise_the_estimate_pv_counts_nothing_for_sells() -> None:
    dawn = Measured(pv_w=0, load_w=300, expected_pv_w=20)
    out = sell_outlook(SlotInput(T0, 1_500, 300), dawn, HOUR)
    assert out.pv_wh == 0
    at_reserve = battery("10")
    assert plan_site(at_reserve, slots(1, pv=1_500, load=300), HOUR, measured=dawn)[0].sell_wh == 0


def test_the_slot_in_delivery_and_closed_gates_drain_the_battery_first() -> None:
    b = battery("50")  # 4000 Wh above the reserve
    run = slots(3, pv=0, load=0)
    free = plan_site(b, run, HOUR)[0].sell_wh
    busy_now = plan_site(
        b, run, HOUR, current=SlotInput(T0 - timedelta(hours=1), 0, 0, sold_wh=3_000), seconds_left=HOUR
    )
    half_done = plan_site(
        b, run, HOUR, current=SlotInput(T0 - timedelta(hours=1), 0, 0, sold_wh=3_000), seconds_left=HOUR // 2
    )
    assert busy_now[0].sell_wh < half_done[0].sell_wh < free
    closed = [replace(run[0], sold_wh=3_000, gate_open=False), *run[1:]]
    plan = plan_site(b, closed, HOUR)
    assert [p.slot_start for p in plan] == [s.slot_start for s in run[1:]]  # nothing planned behind a gate
    assert plan[0].sell_wh == busy_now[0].sell_wh
    with pytest.raises(ValueError, match="gate has closed come first"):
        plan_site(b, [run[0], replace(run[1], gate_open=False)], HOUR)


def test_buys_only_what_the_battery_surely_cannot_cover() -> None:
    assert all(p.buy_wh == 0 for p in plan_site(battery(None), slots(2, load=2_000), HOUR))  # SoC unknown
    empty = plan_site(battery("10"), slots(2, pv=100, load=1_000), HOUR)
    assert all(p.sell_wh == 0 for p in empty)
    assert [p.buy_wh for p in empty] == [(1_000 * 80 // 100) - 100] * 2  # less load than expected, all PV
    some = plan_site(battery("15"), slots(2, pv=0, load=1_000), HOUR)  # 500 Wh above the reserve
    assert 0 < some[0].buy_wh < empty[0].buy_wh + 100
    measured_low = plan_site(
        battery("10"), slots(1, pv=0, load=1_000), HOUR, measured=Measured(0, 400, expected_pv_w=0)
    )
    assert measured_low[0].buy_wh == 400 * 80 // 100


@settings(max_examples=200, deadline=None)
@given(
    soc=st.integers(0, 100),
    reserve=st.integers(0, 50),
    power=st.integers(0, 6_000),
    pv=st.lists(st.integers(0, 5_000), min_size=1, max_size=5),
    load=st.lists(st.integers(0, 3_000), min_size=5, max_size=5),
    sold_now=st.integers(0, 4_000),
    left=st.integers(1, HOUR),
)
def test_planned_sells_are_deliverable_on_the_pessimistic_outlook(
    soc: int, reserve: int, power: int, pv: list[int], load: list[int], sold_now: int, left: int
) -> None:
    b = battery(str(soc), power=power, reserve=reserve)
    run = [SlotInput(T0 + timedelta(hours=k), p, load[k]) for k, p in enumerate(pv)]
    current = SlotInput(T0 - timedelta(hours=1), 0, 0, sold_wh=sold_now)
    plan = plan_site(b, run, HOUR, current=current, seconds_left=left)
    # The reference model runs the rest of the slot in delivery (what the battery can of its sale) and
    # then every planned sell at once, on the outlook the sells were planned on, the household buying what
    # neither PV nor the battery covers: every sell is deliverable and no limit is broken.
    pess = [
        replace(planning.sell_outlook(s, None, HOUR), sold_wh=p.sell_wh)
        for s, p in zip(run, plan, strict=True)
    ]
    part = planning._scaled(planning.sell_outlook(current, None, HOUR), left, HOUR)
    start = planning._with_stored(b, stored_after(b, part, left))
    out = forecast(start, pess, HOUR)
    assert all(f.undeliverable_wh == 0 for f in out)
    execute(start, pess, committed(pess, out), HOUR)


@pytest.mark.parametrize(
    ("open_wh", "live", "want_wh", "want", "near", "kept"),
    [
        (1_000, 100, 1_000, 100, False, True),
        (1_000, 100, 1_000, 104, False, True),  # within one step (5) far from the gate
        (1_000, 100, 1_000, 106, False, False),  # moved by more than a step
        (1_000, 100, 1_000, 102, True, False),  # near the gate: within a fifth of a step only
        (1_000, 100, 1_000, 101, True, True),
        (1_001, 100, 1_000, 100, False, False),  # never more than wanted
        (800, 100, 1_000, 100, False, True),  # 80 % far from the gate
        (799, 100, 1_000, 100, False, False),
        (800, 100, 1_000, 100, True, False),  # 90 % near it
        (900, 100, 1_000, 100, True, True),
        (40, 100, 140, 100, False, True),  # small orders: 100 Wh of slack far from the gate
        (39, 100, 140, 100, False, False),
        (90, 100, 140, 100, True, True),  # and 50 Wh near it
        (89, 100, 140, 100, True, False),
        (1_000, 100, 0, 0, False, False),
    ],
)
def test_reprice_only_when_the_price_moves_by_a_step_or_the_gate_nears(
    open_wh: int, live: int, want_wh: int, want: int, near: bool, kept: bool
) -> None:
    assert (
        keep_live(
            open_wh=open_wh, live_price=live, want_wh=want_wh, want_price=want, price_step=5, near_gate=near
        )
        is kept
    )


@given(capacity=st.integers(1, 200_000), data=st.data())
def test_a_stored_energy_reads_back_unchanged(capacity: int, data: st.DataObject) -> None:
    # The plan follows the battery slot by slot through its state of charge; an inexact percentage
    # floored back to Wh lost 1 Wh per step (91 Wh of 9000 read back as 90).
    stored = data.draw(st.integers(0, capacity))
    b = battery("50", capacity=capacity, power=1_000)
    assert planning._with_stored(b, stored).stored_wh == stored


def test_an_inexact_percentage_reads_back_whole() -> None:
    assert planning._with_stored(battery("50", capacity=9_000, power=1_000), 91).stored_wh == 91
