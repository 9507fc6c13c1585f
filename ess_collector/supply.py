"""How much energy a site can deliver in a coming slot, as the market's cap on sell orders.

    supply = battery energy above the reserve + expected PV - expected own load   (never below 0)

Expected PV and load are the means of the same slot (same UTC time of day) over recent days that have a
measured (complete or recovered) record. A site with too little history gets a clear-sky PV curve from
its nameplate and a flat default household load. The battery term uses the latest good state of charge;
when that is old or missing it counts as zero, so an estimate errs on the side of selling less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from sqlmodel import Session, col, func, select

from common import clock
from ess_collector.forecast import Battery, battery_from_estimate
from ess_collector.models import MEASURED, Site, SiteReading, SlotEnergy


@dataclass(frozen=True)
class SupplyConfig:
    slot_minutes: int = 15
    history_days: int = 7
    min_history_days: int = 2
    utc_offset_h: float = 9.0  # where the sites are (Korea): the clear-sky curve follows local sun time
    clear_sky_derate: float = 0.8  # inverter, temperature and soiling losses at a clear noon
    default_load_w: int = 500
    soc_max_age: timedelta = timedelta(hours=1)
    # The battery's power (charge and discharge) as a percentage of its capacity per hour: sites do not
    # report it, and 50 % (0.5 C) is what home batteries and the simulator do. Efficiency per direction.
    battery_power_pct: int = 50
    battery_efficiency_pct: int = 95

    def battery_power_w(self, capacity_wh: int) -> int:
        return capacity_wh * self.battery_power_pct // 100

    def site_power_w(self, site: SiteLimits) -> tuple[int, int]:
        """(charge, discharge) W: the site's declared limits, else ``battery_power_pct`` of its capacity."""
        default = self.battery_power_w(site.battery_capacity_wh)
        charge = site.max_charge_w if site.max_charge_w is not None else default
        discharge = site.max_discharge_w if site.max_discharge_w is not None else default
        return charge, discharge


class SiteLimits(Protocol):
    """What the power limits need of a site (the ``Site`` row or the collector's ``SiteTarget``)."""

    @property
    def battery_capacity_wh(self) -> int: ...
    @property
    def max_charge_w(self) -> int | None: ...
    @property
    def max_discharge_w(self) -> int | None: ...


@dataclass(frozen=True)
class SupplyEstimate:
    site_id: int
    slot_start: datetime
    slot_minutes: int
    supply_wh: int
    battery_above_reserve_wh: int
    expected_pv_wh: int
    expected_load_wh: int
    soc_pct: Decimal | None
    soc_at: datetime | None
    battery_capacity_wh: int
    reserve_soc_pct: int
    pv_method: str  # history | clear_sky
    load_method: str  # history | default
    history_days: int  # how many past days the history terms averaged


def site_battery(site: SiteLimits, estimate: SupplyEstimate, cfg: SupplyConfig) -> Battery:
    """The site's battery as ``estimate`` saw it, with the site's power limits and ``cfg``'s efficiency:
    where the market's sell cap and the automatic trader's plan both start."""
    charge, discharge = cfg.site_power_w(site)
    return battery_from_estimate(
        estimate,
        max_charge_w=charge,
        max_discharge_w=discharge,
        charge_efficiency_pct=cfg.battery_efficiency_pct,
        discharge_efficiency_pct=cfg.battery_efficiency_pct,
    )


def clear_sky_pv_wh(nameplate_w: int, slot_start: datetime, minutes: int, cfg: SupplyConfig) -> int:
    """A cloudless day's PV energy in the slot: sin^1.5 between 06:00 and 18:00 local time, minute steps."""
    total = 0.0
    for m in range(minutes):
        t = slot_start + timedelta(minutes=m, seconds=30)
        local_h = (t.hour + t.minute / 60 + t.second / 3600 + cfg.utc_offset_h) % 24
        x = (local_h - 6) / 12
        if 0 < x < 1:
            total += nameplate_w * cfg.clear_sky_derate * math.sin(math.pi * x) ** 1.5 / 60
    return int(total)


def _history(
    session: Session, site_id: int, slot_starts: list[datetime], cfg: SupplyConfig
) -> dict[datetime, list[SlotEnergy]]:
    """Each slot's measured records of the same time on the previous ``history_days`` days (one query)."""
    wanted = {s - timedelta(days=k): s for s in slot_starts for k in range(1, cfg.history_days + 1)}
    rows = session.exec(
        select(SlotEnergy).where(
            col(SlotEnergy.site_id) == site_id,
            col(SlotEnergy.slot_start).in_(list(wanted)),
            col(SlotEnergy.status).in_(MEASURED),
        )
    ).all()
    out: dict[datetime, list[SlotEnergy]] = {s: [] for s in slot_starts}
    for r in rows:
        for k in range(1, cfg.history_days + 1):
            s = r.slot_start + timedelta(days=k)
            if s in out:
                out[s].append(r)
    return out


def _latest_soc(session: Session, site_id: int) -> tuple[Decimal | None, datetime | None]:
    row = session.exec(
        select(SiteReading.soc_tenths, SiteReading.ts)
        .where(
            col(SiteReading.site_id) == site_id,
            col(SiteReading.quality) == "ok",
            col(SiteReading.soc_tenths).is_not(None),
        )
        .order_by(col(SiteReading.id).desc())
        .limit(1)
    ).first()
    if row is None:
        return None, None
    tenths, ts = row
    return Decimal(tenths or 0).scaleb(-1), ts


@dataclass(frozen=True)
class MeanPower:
    pv_w: int
    load_w: int


def mean_power_since(session: Session, site_id: int, since: datetime) -> MeanPower | None:
    """Mean PV and load power of the site's good readings since ``since``; None without any."""
    pv, load = session.exec(
        select(func.avg(SiteReading.pv_w), func.avg(SiteReading.load_w)).where(
            col(SiteReading.site_id) == site_id,
            col(SiteReading.ts) >= since,
            col(SiteReading.quality) == "ok",
            col(SiteReading.pv_w).is_not(None),
            col(SiteReading.load_w).is_not(None),
        )
    ).one()
    if pv is None or load is None:
        return None
    return MeanPower(pv_w=int(pv), load_w=int(load))


def estimate_supply(
    session: Session,
    site: Site,
    slot_start: datetime,
    config: SupplyConfig | None = None,
    *,
    now: datetime | None = None,
) -> SupplyEstimate:
    """The market's entry point: what ``site`` can deliver in the slot starting at ``slot_start``."""
    return estimate_run(session, site, [slot_start], config, now=now)[0]


def estimate_run(
    session: Session,
    site: Site,
    slot_starts: list[datetime],
    config: SupplyConfig | None = None,
    *,
    now: datetime | None = None,
) -> list[SupplyEstimate]:
    """The estimates of several slots with two queries (the forecast of a run of slots needs them all)."""
    cfg = config or SupplyConfig()
    now = now or clock.now()
    site_id = site.id or 0
    histories = _history(session, site_id, slot_starts, cfg)
    soc, soc_at = _latest_soc(session, site_id)
    battery = 0
    if soc is not None and soc_at is not None and now - soc_at <= cfg.soc_max_age:
        above = (soc - site.reserve_soc_pct) * site.battery_capacity_wh / 100
        battery = max(0, int(above))
    return [_estimate(site, s, histories[s], soc, soc_at, battery, cfg) for s in slot_starts]


def _estimate(
    site: Site,
    slot_start: datetime,
    history: list[SlotEnergy],
    soc: Decimal | None,
    soc_at: datetime | None,
    battery: int,
    cfg: SupplyConfig,
) -> SupplyEstimate:
    pv_days = [r.pv_wh for r in history if r.pv_wh is not None]
    load_days = [r.load_wh for r in history if r.load_wh is not None]
    if len(pv_days) >= cfg.min_history_days:
        pv, pv_method = sum(pv_days) // len(pv_days), "history"
    else:
        pv, pv_method = clear_sky_pv_wh(site.pv_nameplate_w, slot_start, cfg.slot_minutes, cfg), "clear_sky"
    if len(load_days) >= cfg.min_history_days:
        load, load_method = -(-sum(load_days) // len(load_days)), "history"  # round load up: conservative
    else:
        load, load_method = cfg.default_load_w * cfg.slot_minutes // 60, "default"
    return SupplyEstimate(
        site_id=site.id or 0,
        slot_start=slot_start,
        slot_minutes=cfg.slot_minutes,
        supply_wh=max(0, battery + pv - load),
        battery_above_reserve_wh=battery,
        expected_pv_wh=pv,
        expected_load_wh=load,
        soc_pct=soc,
        soc_at=soc_at,
        battery_capacity_wh=site.battery_capacity_wh,
        reserve_soc_pct=site.reserve_soc_pct,
        pv_method=pv_method,
        load_method=load_method,
        history_days=len(pv_days) if pv_method == "history" else 0,
    )
