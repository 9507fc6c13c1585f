"""The site forecast never promises more than the battery can physically give (property tests against an
independent reference model in exact fractions), and the 19.5 kWh case of issue 15 stays fixed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ess_collector.forecast import (
    Battery,
    SlotForecast,
    SlotOutlook,
    battery_from_estimate,
    forecast,
    outlook_from_estimate,
    sell_cap,
)
from ess_collector.supply import SupplyEstimate

T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
SLOT_S = 900


def battery(soc: str | None = "80", capacity: int = 10_000, power: int = 5_000, reserve: int = 10) -> Battery:
    """A battery charging and discharging at up to ``power`` W, at ``soc`` % (None: unknown)."""
    return Battery(capacity, None if soc is None else Decimal(soc), reserve, power, power)


def run(n: int, pv: int = 0, load: int = 0) -> list[SlotOutlook]:
    return [SlotOutlook(T0 + timedelta(seconds=SLOT_S * k), pv, load) for k in range(n)]


def execute(battery: Battery, slots: list[SlotOutlook], flows: list[tuple[int, int]], seconds: int) -> None:
    """Reference model in exact fractions: each slot exports/imports the given (export, import) Wh beside
    its PV and load; the battery takes or gives the difference. Fails if that breaks a physical limit.
    Surplus beyond what the battery may take is spilled (exported unsold), never a failure."""
    cap, reserve = Fraction(battery.capacity_wh), Fraction(battery.reserve_wh)
    stored = Fraction(battery.stored_wh)
    eta_c = Fraction(battery.charge_efficiency_pct, 100)
    eta_d = Fraction(battery.discharge_efficiency_pct, 100)
    charge_max = Fraction(battery.max_charge_w * seconds, 3600)
    discharge_max = Fraction(battery.max_discharge_w * seconds, 3600)
    for s, (exported, imported) in zip(slots, flows, strict=True):
        net = Fraction(s.pv_wh - s.load_wh - exported + imported)  # + = to the battery, - = from it
        if net >= 0:
            stored += min(net, charge_max, (cap - stored) / eta_c) * eta_c
        else:
            assert -net <= discharge_max, (s.slot_start, -net, discharge_max)
            before = stored
            stored -= -net / eta_d
            assert stored >= min(reserve, before), (s.slot_start, stored, reserve)
        assert stored <= cap


def committed(slots: list[SlotOutlook], out: list[SlotForecast]) -> list[tuple[int, int]]:
    """What the committed path trades: the deliverable commitments and the advised buys."""
    return [(s.sold_wh - f.undeliverable_wh, s.bought_wh + f.buy_wh) for s, f in zip(slots, out, strict=True)]


def planned(slots: list[SlotOutlook], out: list[SlotForecast]) -> list[tuple[int, int]]:
    return [
        (s.sold_wh - f.undeliverable_wh + f.plan_sell_wh, s.bought_wh + f.plan_buy_wh)
        for s, f in zip(slots, out, strict=True)
    ]


batteries = st.builds(
    Battery,
    capacity_wh=st.integers(0, 30_000),
    soc_pct=st.none() | st.decimals(0, 100, places=1),
    reserve_pct=st.integers(0, 100),
    max_charge_w=st.integers(0, 12_000),
    max_discharge_w=st.integers(0, 12_000),
    charge_efficiency_pct=st.integers(70, 100),
    discharge_efficiency_pct=st.integers(70, 100),
)
energies = st.integers(0, 4_000)
slot_lists = st.lists(
    st.tuples(energies, energies, energies | st.just(0), energies | st.just(0)), max_size=12
)
lengths = st.sampled_from([300, 900, 1800, 3600])


def outlooks(raw: list[tuple[int, int, int, int]], seconds: int) -> list[SlotOutlook]:
    return [
        SlotOutlook(T0 + timedelta(seconds=seconds * k), pv, load, sold, bought)
        for k, (pv, load, sold, bought) in enumerate(raw)
    ]


@settings(max_examples=400, deadline=None)
@given(batteries, slot_lists, lengths)
def test_plan_and_committed_path_are_physically_possible(
    battery: Battery, raw: list[tuple[int, int, int, int]], seconds: int
) -> None:
    slots = outlooks(raw, seconds)
    out = forecast(battery, slots, seconds)
    execute(battery, slots, committed(slots, out), seconds)
    execute(battery, slots, planned(slots, out), seconds)


@settings(max_examples=400, deadline=None)
@given(batteries, slot_lists, lengths)
def test_per_slot_power_limit_and_total_energy(
    battery: Battery, raw: list[tuple[int, int, int, int]], seconds: int
) -> None:
    slots = outlooks(raw, seconds)
    out = forecast(battery, slots, seconds)
    per_slot = battery.max_discharge_w * seconds // 3600
    for s, f in zip(slots, out, strict=True):
        assert min(f.sell_wh, f.buy_wh, f.plan_sell_wh, f.plan_buy_wh, f.undeliverable_wh) >= 0
        assert f.sell_wh <= max(0, s.net_wh) + per_slot  # a slot adds at most the battery's power x time
        assert f.plan_sell_wh <= f.sell_wh or f.battery_wh < f.keep_wh  # the plan never beats the cap
        assert f.undeliverable_wh <= s.sold_wh
    above = max(0, battery.stored_wh - battery.reserve_wh) * battery.discharge_efficiency_pct // 100
    surplus = sum(max(0, s.net_wh) for s in slots)
    assert sum(f.plan_sell_wh for f in out) <= above + surplus


ALL = 10**9  # a scripted draw of "the whole cap"


class Scripted:
    """Stands in for ``st.data()`` in an ``@example``: each draw is the next scripted value."""

    def __init__(self, *values: int) -> None:
        self.values = values
        self._next = iter(values)

    def draw(self, strategy: Any) -> int:
        return next(self._next, 0)

    def __repr__(self) -> str:
        return f"Scripted{self.values}"


@settings(max_examples=300, deadline=None)
@given(batteries, slot_lists, lengths, st.data())
# Found by a full run: slot 2 sells its whole cap, then slot 3 its whole cap. Slot 3's cap kept only the
# 67 Wh of its surplus that the forecast's floored room let it charge, while the battery kept for slot 6
# had been worked out with 68 Wh charged: after the sell slot 2 had to keep 1 Wh more than it could.
@example(
    battery=Battery(52, None, 0, 272, 164, charge_efficiency_pct=76, discharge_efficiency_pct=80),
    raw=[(2, 0, 0, 0), (34, 0, 0, 0), (0, 115, 0, 220), (571, 0, 0, 4000), (0, 0, 0, 0), (0, 0, 0, 0),
         (0, 47, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)],
    seconds=900,
    data=Scripted(2, 95, 2, ALL, *[0] * 28, 3, ALL),
)  # fmt: skip
def test_market_committing_caps_one_by_one_never_overcommits(
    battery: Battery, raw: list[tuple[int, int, int, int]], seconds: int, data: st.DataObject | Scripted
) -> None:
    """The market checks each new sell order against the forecast recomputed with every commitment:
    whatever order and sizes the sellers pick, no committed sell becomes undeliverable."""
    slots = outlooks([(pv, load, 0, bought) for pv, load, _, bought in raw], seconds)
    for _ in range(2 * len(slots)):
        k = data.draw(st.integers(0, len(slots) - 1))
        cap = forecast(battery, slots, seconds)[k].sell_wh
        qty = min(cap, data.draw(st.integers(0, cap)))  # min: a scripted ALL is the whole cap
        slots[k] = replace(slots[k], sold_wh=slots[k].sold_wh + qty)
    out = forecast(battery, slots, seconds)
    assert all(f.undeliverable_wh == 0 for f in out)
    execute(battery, slots, committed(slots, out), seconds)


def test_a_full_10_kwh_battery_at_5_kw_adds_at_most_1250_wh_per_15_minute_slot() -> None:
    out = forecast(battery("100", reserve=0), run(12), SLOT_S)
    assert [f.sell_wh for f in out] == [1250] * 12
    # the plan spreads 10 kWh x 95 % over the slots at 1,250 Wh each until the battery is at its reserve
    # (each slot's draw is rounded up to whole Wh: 7 x 1,316 Wh, then 788 Wh x 95 % = 748 Wh)
    assert [f.plan_sell_wh for f in out] == [1250] * 7 + [748, 0, 0, 0, 0]
    assert sum(f.plan_sell_wh for f in out) <= 9_500


def test_regression_three_slots_never_sell_19_5_kwh_from_a_10_kwh_battery() -> None:
    """Issue 15: a 10 kWh battery at 100 % with a 35 % reserve was allowed 6.5 kWh in each of three
    slots. Sellers taking every slot's cap one after the other now get at most 6.5 kWh x 95 % in all."""
    battery = Battery(10_000, Decimal(100), 35, 30_000, 30_000)  # power no limit: only energy counts
    slots = run(3)
    for k in range(3):
        cap = forecast(battery, slots, SLOT_S)[k].sell_wh
        slots[k] = replace(slots[k], sold_wh=cap)
    assert [s.sold_wh for s in slots] == [6175, 0, 0]
    out = forecast(battery, slots, SLOT_S)
    assert sum(s.sold_wh for s in slots) == 6175 and all(f.undeliverable_wh == 0 for f in out)
    assert [f.sell_wh for f in out] == [0, 0, 0]
    # with the battery's real 5 kW limit each slot holds 1,250 Wh and the three slots 3,750 Wh
    limited = replace(battery, max_charge_w=5_000, max_discharge_w=5_000)
    slots = run(3)
    for k in range(3):
        slots[k] = replace(slots[k], sold_wh=forecast(limited, slots, SLOT_S)[k].sell_wh)
    assert [s.sold_wh for s in slots] == [1250, 1250, 1250]


def test_later_commitments_and_own_load_are_kept() -> None:
    battery = Battery(10_000, Decimal(60), 10, 5_000, 5_000)  # 5,000 Wh above the reserve
    slots = run(4)
    slots[3] = replace(slots[3], sold_wh=1_000)  # sold in the last slot already
    slots[2] = replace(slots[2], load_wh=800)  # the household needs 800 Wh in slot 2
    out = forecast(battery, slots, SLOT_S)
    # the reserve plus what slot 3's sell and slot 2's load draw from the battery (rounded up)
    assert out[0].keep_wh == 1_000 + 1_053 + 843
    assert out[0].sell_wh == 1_250  # the power limit, not the energy, binds in slot 0
    # selling everything that is left elsewhere still leaves slots 2 and 3 covered
    slots[0] = replace(slots[0], sold_wh=1_250)
    slots[1] = replace(slots[1], sold_wh=forecast(battery, slots, SLOT_S)[1].sell_wh)
    out = forecast(battery, slots, SLOT_S)
    assert out[2].buy_wh == 0 and out[3].undeliverable_wh == 0


def test_pv_surplus_is_sellable_and_charging_loses_energy() -> None:
    battery = Battery(10_000, Decimal(10), 10, 5_000, 5_000)  # empty: only PV can be sold
    slots = run(2, pv=1_000, load=200)
    out = forecast(battery, slots, SLOT_S)
    # alone, slot 1 could also sell what slot 0 stored, at 95 % x 95 %; together, each its own surplus
    assert [f.sell_wh for f in out] == [800, 800 + (800 * 95 // 100) * 95 // 100]
    assert [f.plan_sell_wh for f in out] == [800, 800]
    slots = [replace(slots[0], load_wh=1_000, pv_wh=1_800), replace(slots[1], pv_wh=0, load_wh=0)]
    path = forecast(battery, slots, SLOT_S)
    assert path[1].battery_wh == 1_000 + 800 * 95 // 100
    assert path[1].sell_wh == (800 * 95 // 100) * 95 // 100


def test_unknown_soc_sells_nothing_from_the_battery() -> None:
    out = forecast(battery(None, reserve=20), run(2), SLOT_S)
    assert [f.sell_wh for f in out] == [0, 0]


def test_own_deficit_beyond_the_battery_power_is_bought() -> None:
    out = forecast(battery("100", power=2_000, reserve=0), run(1, load=1_000), SLOT_S)
    assert (out[0].sell_wh, out[0].buy_wh) == (0, 500)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        forecast(battery("50"), [*run(1), *run(1)], SLOT_S)
    with pytest.raises(ValueError):
        SlotOutlook(T0, -1, 0)
    with pytest.raises(ValueError):
        Battery(10_000, Decimal(101), 10, 5_000, 5_000)


def test_from_the_supply_estimate() -> None:
    est = SupplyEstimate(
        site_id=1, slot_start=T0, slot_minutes=15, supply_wh=0, battery_above_reserve_wh=0,
        expected_pv_wh=700, expected_load_wh=125, soc_pct=Decimal("80.0"), soc_at=T0,
        battery_capacity_wh=10_000, reserve_soc_pct=20, pv_method="clear_sky", load_method="default",
        history_days=0,
    )  # fmt: skip
    # above the reserve but counted as 0 by the estimate: its SoC was too old
    assert battery_from_estimate(est, max_charge_w=5_000, max_discharge_w=5_000).soc_pct is None
    fresh = replace(est, battery_above_reserve_wh=6_000)
    battery = battery_from_estimate(fresh, max_charge_w=5_000, max_discharge_w=5_000)
    assert (battery.stored_wh, battery.reserve_wh) == (8_000, 2_000)
    outlook = outlook_from_estimate(fresh, sold_wh=100)
    assert (outlook.pv_wh, outlook.load_wh, outlook.sold_wh) == (700, 125, 100)
    assert forecast(battery, [outlook], SLOT_S)[0].sell_wh == 700 - 125 - 100 + 1_250


def _sell_in_turn(battery: Battery, slots: list[SlotOutlook]) -> list[int]:
    """Each slot in turn sells all the market lets it (its cap recomputed with the earlier sells)."""
    for k, s in enumerate(slots):
        slots[k] = replace(s, sold_wh=sell_cap(battery, slots, SLOT_S, s.slot_start))
    return [s.sold_wh for s in slots]


def test_a_10_kwh_battery_sells_its_energy_once_over_three_slots() -> None:
    """The regression: the old estimate let a 10 kWh battery sell 19.5 kWh in three slots (the energy
    above the reserve in each). At 5 kW it adds 1,250 Wh per 15-minute slot; at 40 kW the first slot
    takes what is above the reserve after losses (9,000 Wh x 95 %) and the others get nothing."""
    slow = battery("100")
    assert _sell_in_turn(slow, run(3)) == [1250, 1250, 1250]
    fast = battery("100", power=40_000)
    assert _sell_in_turn(fast, run(3)) == [8550, 0, 0]
    # a later slot sold first keeps its energy in the battery: the earlier slot gets only the rest
    later_first = run(3)
    later_first[2] = replace(
        later_first[2], sold_wh=sell_cap(fast, later_first, SLOT_S, later_first[2].slot_start)
    )
    assert later_first[2].sold_wh == 8550
    assert sell_cap(fast, later_first, SLOT_S, later_first[0].slot_start) == 0
    # the household's own load comes first; a full battery cannot charge
    loaded = run(3, pv=0, load=300)
    assert _sell_in_turn(slow, loaded) == [950, 950, 950]
    with pytest.raises(ValueError, match="not a slot of the run"):
        sell_cap(slow, run(3), SLOT_S, T0 - timedelta(seconds=SLOT_S))
