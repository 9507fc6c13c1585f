"""The simulated community of `essx demo`: who lives there, and how each household trades.

Everything here is pure and deterministic for a seed, so it is unit-tested without a service.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.market.models import OrderSide
from app.users.models import Role
from ess_collector.simulator import SiteConfig, SiteSimulator, noise

PIN = "246810"  # every demo household's wallet PIN (a demo: the accounts are throw-away)
PASSWORD = "demo-household-password"
MIN_ORDER_WH = 100


@dataclass
class Household:
    index: int
    name: str
    role: Role  # prosumer (a site with PV and a battery) or consumer (no site)
    config: SiteConfig | None
    email: str = ""
    user_id: int = 0
    token: str = ""
    site_id: int | None = None
    port: int | None = None
    orders: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.email = self.email or f"household-{self.index + 1:03d}@essx-demo.example.com"


def plan_community(households: int, *, seed: int = 0, consumer_share: float = 0.25) -> list[Household]:
    """Prosumers with PV from 2.5 to 9 kW and batteries from 5 to 20 kWh, and some consumers (no site)."""
    if households < 1:
        raise ValueError("a community needs at least one household")
    consumers = round(households * consumer_share) if households > 1 else 0
    prosumers = households - consumers
    out: list[Household] = []
    for i in range(households):
        if i < prosumers:
            base = SiteConfig.from_seed(seed, i)
            spread = i / max(1, prosumers - 1)  # sizes vary evenly across the prosumers
            pv = 2500 + 100 * round(65 * spread)
            capacity = 5000 + 10 * round(1500 * noise(seed, i, 0xDE0))
            power = min(5000, capacity // 200 * 100)
            config = dataclasses.replace(
                base, pv_peak_w=pv, capacity_wh=capacity, max_charge_w=power, max_discharge_w=power
            )
            out.append(Household(i, f"Household {i + 1} (prosumer)", Role.prosumer, config))
        else:
            out.append(Household(i, f"Household {i + 1} (consumer)", Role.consumer, None))
    return out


def consumer_load_wh(
    seed: int, index: int, slot_start: datetime, slot_minutes: int, utc_offset_h: int = 9
) -> int:
    """A household without a site: a base load with morning and evening peaks, in local time."""
    hour = (slot_start + timedelta(hours=utc_offset_h)).hour + slot_start.minute / 60
    base = 250 + int(200 * noise(seed, index, 0xC01))
    morning = 600 + int(600 * noise(seed, index, 0xC02))
    evening = 900 + int(900 * noise(seed, index, 0xC03))
    watts = base
    if 6 <= hour < 9:
        watts += morning
    elif 18 <= hour < 23:
        watts += evening
    return watts * slot_minutes // 60


@dataclass(frozen=True)
class Intent:
    side: OrderSide
    quantity_wh: int


def decide(household: Household, supply: dict[str, Any] | None, load_wh: int | None) -> Intent | None:
    """What a household wants from the market for one slot, from its site's supply estimate.

    A prosumer sells the PV surplus its full battery cannot take (what its meter will show as export;
    the battery serves the house) and buys what PV and the battery above its reserve will not cover; a
    consumer buys its expected load.
    """
    if household.role == Role.consumer:
        return Intent(OrderSide.buy, load_wh) if load_wh and load_wh >= MIN_ORDER_WH else None
    if supply is None:
        return None
    surplus = supply["expected_pv_wh"] - supply["expected_load_wh"]
    if surplus > 0:
        # The house charges its battery first: only what does not fit is exported (and metered).
        soc = supply.get("soc_pct")
        headroom = int(supply["battery_capacity_wh"] * (100 - soc) / 100) if soc is not None else 0
        qty = min((surplus - headroom) * 9 // 10, supply["supply_wh"])  # a margin: estimates are estimates
        return Intent(OrderSide.sell, qty) if qty >= MIN_ORDER_WH else None
    shortfall = -surplus - supply["battery_above_reserve_wh"]
    return Intent(OrderSide.buy, shortfall) if shortfall >= MIN_ORDER_WH else None


def limit_price(suggested: int, floor: int, ceiling: int, side: OrderSide, rng: random.Random) -> int:
    """Around the service's price suggestion: a buyer bids up to 5 % of the band above it, a seller asks
    up to 5 % below it, so most orders meet; always inside the band."""
    band = ceiling - floor
    step = rng.randint(0, max(0, band // 20))
    price = suggested + step if side == OrderSide.buy else suggested - step
    return max(floor, min(ceiling, price))


@dataclass(frozen=True)
class SlotFlows:
    """The community's grid flows in one slot without the market: what its sites would have exported,
    and what its sites and consumers would have imported."""

    slot_start: datetime
    export_wh: int
    import_wh: int

    @property
    def feasible_wh(self) -> int:
        """What local trade could at most have moved in the slot: min(export, import)."""
        return min(self.export_wh, self.import_wh)


def flows_without_market(
    households: list[Household], seed: int, sims_start: datetime, slots: list[datetime], slot_minutes: int
) -> list[SlotFlows]:
    """The same simulated sites (same seed, sizes and start) in self-consumption only, no dispatch: the
    community's export and import per slot had nobody traded. Consumers import their whole load."""
    prosumers = [h for h in households if h.config is not None]
    sims = [
        SiteSimulator(i, seed, start=sims_start, config=h.config)
        for i, h in enumerate(prosumers)
        if h.config is not None
    ]
    step = timedelta(minutes=slot_minutes)
    out = []
    for s in slots:
        exported = imported = 0
        for sim in sims:
            sim.advance_to(s)
            before = sim.reading
            sim.advance_to(s + step)
            after = sim.reading
            exported += (after.export_wh or 0) - (before.export_wh or 0)
            imported += (after.import_wh or 0) - (before.import_wh or 0)
        imported += sum(
            consumer_load_wh(seed, h.index, s, slot_minutes) for h in households if h.config is None
        )
        out.append(SlotFlows(s, exported, imported))
    return out
