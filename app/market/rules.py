"""The market's rules for a delivery slot: alignment, gate closure, horizon and the price band."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.core.money import format_amount
from app.market.errors import PriceOutsideBand, SlotRejected
from app.market.tariff import TariffSchedule
from common import clock


@dataclass(frozen=True)
class MarketRules:
    slot_minutes: int
    gate_closure_minutes: int
    horizon_hours: int
    mechanism: str
    tariff: TariffSchedule

    @property
    def slot(self) -> timedelta:
        return timedelta(minutes=self.slot_minutes)

    def slot_of(self, when: datetime) -> datetime:
        """The start of the slot containing `when` (slots are aligned to UTC midnight)."""
        return clock.slot_start(when, self.slot_minutes)

    def gate_closure(self, slot_start: datetime) -> datetime:
        return slot_start - timedelta(minutes=self.gate_closure_minutes)

    def check_slot(self, slot_start: datetime, now: datetime) -> datetime:
        """Returns the slot start in UTC, or raises SlotRejected saying why."""
        if slot_start.tzinfo is None:
            raise SlotRejected("slot_start needs a time zone (use UTC, e.g. 2026-11-22T10:15:00Z)")
        if not clock.in_range(slot_start):  # before any arithmetic: year 1 or 9999 would overflow
            raise SlotRejected(f"slot_start must lie between {clock.EARLIEST.year} and {clock.LATEST.year}")
        slot_start = slot_start.astimezone(UTC)
        if slot_start != self.slot_of(slot_start):
            raise SlotRejected(f"slot_start must be aligned to {self.slot_minutes}-minute slots in UTC")
        if now >= self.gate_closure(slot_start):
            raise SlotRejected(
                f"the gate for {slot_start.isoformat()} closed at {self.gate_closure(slot_start).isoformat()}"
            )
        if slot_start > now + timedelta(hours=self.horizon_hours):
            raise SlotRejected(f"orders are accepted at most {self.horizon_hours} hours ahead")
        return slot_start

    def band(self, slot_start: datetime) -> tuple[int, int]:
        """(floor, ceiling): the feed-in price and the top retail tier at that time."""
        return self.tariff.floor(slot_start), self.tariff.ceiling(slot_start)

    def check_price(self, slot_start: datetime, price: int) -> None:
        floor, ceiling = self.band(slot_start)
        if not floor <= price <= ceiling:
            raise PriceOutsideBand(
                f"limit_price {format_amount(price)} is outside the price band of this slot: from the feed-in "
                f"price {format_amount(floor)} to the top retail tariff {format_amount(ceiling)} coins per kWh"
            )
