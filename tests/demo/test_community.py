"""The demo community and its traders' rules (pure logic)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.demo import community as cm


def test_plan_has_prosumers_of_varied_sizes_and_some_consumers() -> None:
    hs = cm.plan_community(20, seed=3)
    prosumers = [h for h in hs if h.role == "prosumer"]
    consumers = [h for h in hs if h.role == "consumer"]
    assert len(prosumers) == 15 and len(consumers) == 5
    pv = [h.config.pv_peak_w for h in prosumers if h.config]
    batteries = [h.config.capacity_wh for h in prosumers if h.config]
    assert min(pv) == 2500 and max(pv) == 9000
    assert len(set(batteries)) > 10 and all(5000 <= b <= 20000 and b % 10 == 0 for b in batteries)
    assert all(h.config is None for h in consumers)
    assert len({h.email for h in hs}) == 20
    assert cm.plan_community(20, seed=3) == hs  # deterministic


def test_a_single_household_is_a_prosumer() -> None:
    assert [h.role for h in cm.plan_community(1)] == ["prosumer"]


def test_plan_refuses_an_empty_community() -> None:
    with pytest.raises(ValueError):
        cm.plan_community(0)


def supply(
    pv: int, load: int, above_reserve: int = 0, soc: float | None = 100.0, capacity: int = 10_000
) -> dict:
    return {
        "expected_pv_wh": pv,
        "expected_load_wh": load,
        "battery_above_reserve_wh": above_reserve,
        "supply_wh": above_reserve + max(0, pv - load),
        "soc_pct": soc,
        "battery_capacity_wh": capacity,
    }


PROSUMER = cm.plan_community(2)[0]
CONSUMER = cm.plan_community(4)[3]


def test_prosumer_sells_only_what_its_full_battery_exports() -> None:
    assert cm.decide(PROSUMER, supply(3000, 1000), None) == cm.Intent("sell", 1800)
    # half-empty 10 kWh battery takes the 2 kWh surplus: nothing reaches the meter
    assert cm.decide(PROSUMER, supply(3000, 1000, soc=50.0), None) is None


def test_prosumer_buys_what_pv_and_battery_do_not_cover() -> None:
    assert cm.decide(PROSUMER, supply(0, 1500, above_reserve=300), None) == cm.Intent("buy", 1200)
    assert cm.decide(PROSUMER, supply(0, 1500, above_reserve=5000), None) is None


def test_small_quantities_and_missing_estimates_place_nothing() -> None:
    assert cm.decide(PROSUMER, supply(1050, 1000), None) is None
    assert cm.decide(PROSUMER, None, None) is None
    assert cm.decide(CONSUMER, None, 50) is None
    assert cm.decide(CONSUMER, None, 700) == cm.Intent("buy", 700)


def test_consumer_load_peaks_in_the_evening_local_time() -> None:
    night = cm.consumer_load_wh(0, 5, datetime(2026, 11, 21, 18, 0, tzinfo=UTC), 60)  # 03:00 KST
    evening = cm.consumer_load_wh(0, 5, datetime(2026, 11, 21, 11, 0, tzinfo=UTC), 60)  # 20:00 KST
    assert evening > night > 0
    assert cm.consumer_load_wh(0, 5, datetime(2026, 11, 21, 11, 0, tzinfo=UTC), 15) == evening // 4


@given(
    floor=st.integers(1, 10**20),
    width=st.integers(0, 10**20),
    offset=st.integers(0, 10**20),
    side=st.sampled_from(["buy", "sell"]),
    seed=st.integers(0, 2**32),
)
def test_limit_price_stays_in_the_band(floor: int, width: int, offset: int, side: str, seed: int) -> None:
    ceiling = floor + width
    suggested = floor + offset % (width + 1)
    price = cm.limit_price(suggested, floor, ceiling, side, random.Random(seed))
    assert floor <= price <= ceiling
    assert (price >= suggested) if side == "buy" else (price <= suggested)


def test_flows_without_market_rerun_the_sites_and_add_the_consumers_load() -> None:
    households = cm.plan_community(8)
    start = datetime(2026, 12, 4, 12, tzinfo=UTC)
    slots = [datetime(2026, 12, 5, h, tzinfo=UTC) for h in (3, 15)]  # noon and midnight in Korea
    noon, night = cm.flows_without_market(households, 0, start, slots, 60)
    assert cm.flows_without_market(households, 0, start, slots, 60) == [noon, night]  # deterministic
    consumers = sum(cm.consumer_load_wh(0, h.index, slots[1], 60) for h in households if h.role == "consumer")
    assert night.export_wh == 0 and night.import_wh >= consumers > 0 and night.feasible_wh == 0
    assert noon.export_wh > 0 and noon.feasible_wh == min(noon.export_wh, noon.import_wh)
