"""Reference prices: the retail tariff (the price band's ceiling) and the feed-in price (its floor).

Prices are integers in coin base units per kWh. The default schedule follows Korea's residential tariff:
three progressive tiers by monthly consumption (summer July-August with wider tiers), and time-of-use
periods that scale the feed-in price. 1 coin is worth 1 KRW in the defaults; a deployment loads its own
schedule from JSON (`ESSX_TARIFF_FILE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

COIN = 10**18
KST = timezone(timedelta(hours=9))  # tiers and periods are defined on the local clock


@dataclass(frozen=True)
class Tier:
    up_to_kwh: int | None  # None: no upper bound
    price: int  # coin base units per kWh


@dataclass(frozen=True)
class Period:
    name: str
    start_hour: int  # local time, inclusive
    end_hour: int  # local time, exclusive; may wrap past midnight
    feed_in_price: int

    def contains(self, hour: int) -> bool:
        if self.start_hour == self.end_hour:
            return True  # a period from h to h covers the whole day
        if self.start_hour < self.end_hour:
            return self.start_hour <= hour < self.end_hour
        return hour >= self.start_hour or hour < self.end_hour


@dataclass(frozen=True)
class TariffSchedule:
    tiers: tuple[Tier, ...]
    summer_tiers: tuple[Tier, ...]
    summer_months: tuple[int, ...]
    periods: tuple[Period, ...]
    utc_offset_hours: int = 9
    meta: dict[str, Any] = field(default_factory=dict)

    def _local(self, when: datetime) -> datetime:
        return when.astimezone(timezone(timedelta(hours=self.utc_offset_hours)))

    def tiers_for(self, when: datetime) -> tuple[Tier, ...]:
        return self.summer_tiers if self._local(when).month in self.summer_months else self.tiers

    def period(self, when: datetime) -> Period:
        hour = self._local(when).hour
        for p in self.periods:
            if p.contains(hour):
                return p
        raise ValueError(f"no time-of-use period covers hour {hour}")

    def floor(self, when: datetime) -> int:
        """The feed-in price at that time: what the grid pays a seller."""
        return self.period(when).feed_in_price

    def ceiling(self, when: datetime) -> int:
        """The highest retail price (top tier): no buyer pays more than the utility would charge."""
        return max(t.price for t in self.tiers_for(when))

    def retail_price(self, when: datetime, month_kwh_so_far: int) -> int:
        """The marginal retail price for a household that has used `month_kwh_so_far` this month."""
        for tier in self.tiers_for(when):
            if tier.up_to_kwh is None or month_kwh_so_far < tier.up_to_kwh:
                return tier.price
        return self.tiers_for(when)[-1].price

    def tier_index(self, when: datetime, month_kwh_so_far: int) -> int:
        for i, tier in enumerate(self.tiers_for(when)):
            if tier.up_to_kwh is None or month_kwh_so_far < tier.up_to_kwh:
                return i + 1
        return len(self.tiers_for(when))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TariffSchedule:
        def tiers(rows: list[dict[str, Any]]) -> tuple[Tier, ...]:
            return tuple(Tier(r.get("up_to_kwh"), int(r["price"])) for r in rows)

        schedule = cls(
            tiers=tiers(data["tiers"]),
            summer_tiers=tiers(data.get("summer_tiers", data["tiers"])),
            summer_months=tuple(data.get("summer_months", ())),
            periods=tuple(
                Period(p["name"], p["start_hour"], p["end_hour"], int(p["feed_in_price"]))
                for p in data["periods"]
            ),
            utc_offset_hours=int(data.get("utc_offset_hours", 9)),
            meta=data.get("meta", {}),
        )
        schedule.validate()
        return schedule

    def validate(self) -> None:
        for name, tiers in (("tiers", self.tiers), ("summer_tiers", self.summer_tiers)):
            if not tiers or tiers[-1].up_to_kwh is not None:
                raise ValueError(f"{name}: the last tier must have no upper bound")
            if any(t.price <= 0 for t in tiers):
                raise ValueError(f"{name}: prices must be positive")
        covered = {h for p in self.periods for h in range(24) if p.contains(h)}
        if covered != set(range(24)):
            raise ValueError("time-of-use periods must cover all 24 hours")
        for p in self.periods:
            if p.feed_in_price <= 0 or p.feed_in_price >= min(t.price for t in self.tiers):
                raise ValueError(
                    f"period {p.name}: the feed-in price must be positive and below every retail tier"
                )

    @classmethod
    def load(cls, path: Path | None) -> TariffSchedule:
        return cls.from_json(json.loads(path.read_text())) if path else DEFAULT


def _krw(tenths: int) -> int:
    """Tenths of a won per kWh, as coin base units (integers only: 1200 -> 120.0 coins)."""
    return tenths * COIN // 10


# KEPCO residential low-voltage energy charges (KRW/kWh) and feed-in (SMP-like) prices by period.
DEFAULT = TariffSchedule(
    tiers=(Tier(200, _krw(1200)), Tier(400, _krw(2146)), Tier(None, _krw(3073))),
    summer_tiers=(Tier(300, _krw(1200)), Tier(450, _krw(2146)), Tier(None, _krw(3073))),
    summer_months=(7, 8),
    periods=(
        Period("off_peak", 22, 8, _krw(850)),
        Period("mid", 8, 11, _krw(1000)),
        Period("peak", 11, 17, _krw(1150)),
        Period("mid_evening", 17, 22, _krw(1000)),
    ),
    meta={
        "source": "KEPCO residential progressive tiers; feed-in prices are illustrative SMP levels",
        "unit": "1 coin = 1 KRW",
    },
)
