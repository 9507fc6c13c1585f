"""Price suggestions (the whitepaper's oracle): a limit price from the book, recent trades and the tariff."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, func, select

from app.context import Context
from app.core.money import format_amount
from app.market import engine
from app.market.matching.types import BookLevels
from app.market.models import OrderSide, Trade
from app.market.service import rules
from common import clock
from ess_collector.models import Site, SlotEnergy

PRICE_STEP = 10**16  # 0.01 coin per kWh: the precision of a suggested price


@dataclass(frozen=True)
class Inputs:
    """What a suggestion reads about its caller and the market's last trades, the same for every slot a
    caller prices at one moment (the automatic trader reads them once per user's turn, not per slot)."""

    month_kwh: int  # the caller's energy this month: imported at its sites, and bought on the market
    recent: list[int]  # the last 20 trade prices, newest first


def inputs(session: Session, user_id: int, now: datetime) -> Inputs:
    """`Inputs` in two statements: the month's kWh (both sums in one), the last trades."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    sites = select(Site.id).where(col(Site.owner_id) == user_id)
    imported = (
        select(func.coalesce(func.sum(SlotEnergy.import_wh), 0))
        .where(col(SlotEnergy.site_id).in_(sites), col(SlotEnergy.slot_start) >= start)
        .scalar_subquery()
    )
    bought = (
        select(func.coalesce(func.sum(Trade.quantity_wh), 0))
        .where(col(Trade.buyer_id) == user_id, col(Trade.slot_start) >= start)
        .scalar_subquery()
    )
    wh_imported, wh_bought = session.execute(select(imported, bought)).one()
    recent = session.exec(select(Trade.price).order_by(col(Trade.created_at).desc()).limit(20))
    return Inputs((int(wh_imported or 0) + int(wh_bought or 0)) // 1000, [int(p) for p in recent])


def suggest(
    ctx: Context,
    session: Session,
    user_id: int,
    slot_start: datetime,
    side: str,
    levels: BookLevels | None = None,
    read: Inputs | None = None,
) -> dict[str, Any]:
    """A limit price for `user_id` in a slot, with how it was found (manual traders and the agent).
    `levels`: the slot's book levels when the caller has them (else read now). `read`: the user's
    `inputs` when the caller read them for several slots (else read now)."""
    r = rules(ctx)
    if slot_start.tzinfo is None:
        slot_start = slot_start.replace(tzinfo=UTC)
    floor, ceiling = r.band(slot_start)  # the band every order is checked against, as the book shows it
    if read is None:
        read = inputs(session, user_id, clock.now())
    month_kwh, recent = read.month_kwh, read.recent
    retail = r.tariff.retail_price(slot_start, month_kwh)  # what the caller would pay the utility now
    tier = r.tariff.tier_index(slot_start, month_kwh)
    if levels is None:
        levels = engine.book_levels(session, slot_start)
    demand = sum(q for _, q in levels["bids"])
    supply = sum(q for _, q in levels["asks"])
    # Pressure 0..1: 0.5 when supply meets demand; more demand pushes the target towards the caller's
    # retail price (buying above it would cost more than the grid).
    pressure_num, pressure_den = (demand, demand + supply) if demand + supply else (1, 2)
    target = floor + (retail - floor) * pressure_num // pressure_den
    last_avg = sum(int(p) for p in recent) // len(recent) if recent else None
    base = (target + last_avg) // 2 if last_avg is not None else target
    nudge = (retail - floor) // 50  # 2% of the span towards the other side, to get filled
    suggested = base + nudge if side == OrderSide.buy else base - nudge
    # A price someone would type: whole cents of a coin, rounded towards the other side.
    suggested = (
        -(-suggested // PRICE_STEP) * PRICE_STEP
        if side == OrderSide.buy
        else suggested // PRICE_STEP * PRICE_STEP
    )
    suggested = max(floor, min(retail, suggested))
    tiers = len(r.tariff.tiers_for(slot_start))
    return {
        "slot_start": slot_start.isoformat(),
        "side": side,
        "suggested_price": format_amount(suggested),
        "band": {"floor": format_amount(floor), "ceiling": format_amount(ceiling)},
        "retail_price": format_amount(retail),
        "tariff_tier": tier,
        "month_kwh_so_far": month_kwh,
        "explanation": (
            f"Orders may name any price from the feed-in price {format_amount(floor)} to the top retail tariff "
            f"{format_amount(ceiling)} coins per kWh. With {month_kwh} kWh used this month you are in tier {tier} "
            f"of {tiers}: the utility would charge you {format_amount(retail)} per kWh, so the suggestion stays "
            f"between {format_amount(floor)} and {format_amount(retail)}."
        ),
        "last_clearing_prices": [format_amount(int(p)) for p in recent[:5]],
        "book": {"demand_wh": demand, "supply_wh": supply},
        "supply_demand_ratio": f"{supply / demand:.3f}" if demand else None,
        "computed_from": "floor + (retail_price - floor) x demand / (demand + supply), averaged with the last "
        "20 trade prices, nudged by 2% of that span towards the other side, rounded to 0.01 towards the "
        "other side, clipped to floor..retail_price",
    }
