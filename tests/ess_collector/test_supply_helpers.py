"""The supply module's helpers shared by the market's sell cap and the automatic trader: the site's battery
from an estimate, and the mean power of the site's recent good readings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy.engine import Engine
from sqlmodel import Session

from ess_collector.models import SiteReading
from ess_collector.supply import MeanPower, SupplyConfig, SupplyEstimate, mean_power_since, site_battery
from tests.ess_collector.harness import make_owner, site_row

T0 = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Limits:
    battery_capacity_wh: int
    max_charge_w: int | None = None
    max_discharge_w: int | None = None


def estimate(soc: str | None = "60", above_wh: int = 4_000) -> SupplyEstimate:
    return SupplyEstimate(
        site_id=1,
        slot_start=T0,
        slot_minutes=15,
        supply_wh=above_wh,
        battery_above_reserve_wh=above_wh,
        expected_pv_wh=0,
        expected_load_wh=0,
        soc_pct=None if soc is None else Decimal(soc),
        soc_at=T0,
        battery_capacity_wh=10_000,
        reserve_soc_pct=20,
        pv_method="history",
        load_method="history",
        history_days=3,
    )


def test_the_battery_takes_the_sites_declared_limits_and_the_configs_efficiency() -> None:
    cfg = SupplyConfig(battery_efficiency_pct=90)
    battery = site_battery(Limits(10_000, max_charge_w=3_000, max_discharge_w=4_000), estimate(), cfg)
    assert (battery.max_charge_w, battery.max_discharge_w) == (3_000, 4_000)
    assert battery.charge_efficiency_pct == battery.discharge_efficiency_pct == 90
    assert (battery.capacity_wh, battery.soc_pct, battery.reserve_pct) == (10_000, Decimal(60), 20)


def test_undeclared_limits_are_the_configs_share_of_the_capacity() -> None:
    battery = site_battery(
        Limits(10_000, max_discharge_w=1_000), estimate(), SupplyConfig(battery_power_pct=40)
    )
    assert (battery.max_charge_w, battery.max_discharge_w) == (4_000, 1_000)


def test_a_soc_the_estimate_found_too_old_is_unknown() -> None:
    assert site_battery(Limits(10_000), estimate(above_wh=0), SupplyConfig()).soc_pct is None


def test_mean_power_counts_good_complete_readings_since_the_time(clean_db: Engine) -> None:
    owner = make_owner(clean_db)
    with Session(clean_db) as s:
        site = site_row(owner, "10.1.1.1", 502, name="h", reserve_soc_pct=20, created_at=T0)
        s.add(site)
        s.flush()
        site_id = site.id or 0
        assert mean_power_since(s, site_id, T0) is None  # no readings
        readings = [
            (T0 - timedelta(seconds=5), "ok", 9_000, 9_000),  # before the time
            (T0, "ok", 1_000, 400),
            (T0 + timedelta(seconds=5), "ok", 2_001, 600),
            (T0 + timedelta(seconds=10), "stale", 9_000, 9_000),  # not good
            (T0 + timedelta(seconds=15), "ok", None, 9_000),  # incomplete
        ]
        for ts, quality, pv, load in readings:
            s.add(SiteReading(site_id=site_id, ts=ts, quality=quality, pv_w=pv, load_w=load))
        s.commit()
        assert mean_power_since(s, site_id, T0) == MeanPower(pv_w=1_500, load_w=500)  # 1500.5 truncated
        assert mean_power_since(s, site_id, T0 + timedelta(seconds=20)) is None
        assert mean_power_since(s, site_id + 1, T0) is None
