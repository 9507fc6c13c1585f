"""The automatic trader: run by the market's background worker (the lease holder) on every pass.

For each enabled profile and each of the next ``AGENT_SLOTS`` slots whose gate is still open, it decides
what the user should have in the book on each side, and places, reprices or cancels that user's orders
to match, through the market's own order rules and escrow (app/market/service.py):

- sell: the site's joint plan (ess_collector/forecast.py: expected PV and load, the battery's state,
  power limits, efficiency and the profile's reserve, with every other commitment of the run kept),
  capped by the market's per-slot supply check and the profile's maximum per slot;
- buy: what the forecast says the household must buy (a site), or the expected use (no site), within
  what is left of the daily spending limit;
- price: the price suggestion, never below the sell floor nor above the buy ceiling, inside the band.

Idempotent: an order and the agent's link to it (``AgentOrder.live_key``, unique per user, slot and side)
commit together, so a pass killed anywhere leaves either both or neither, and the next pass sees what is
live instead of placing it again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.context import Context
from app.core.crash import crash_point
from app.core.errors import AppError
from app.core.money import format_amount, parse_amount
from app.core.security import utcnow
from app.market import engine
from app.market import service as market
from app.market.matching.types import escrow_amount
from app.market.models import EscrowStatus, Order, OrderSide, OrderStatus
from app.market.rules import MarketRules
from app.market.schemas import OrderCreate
from app.settlement.pricing import suggest
from app.sites.service import estimate_supply
from app.trading import service
from app.trading.models import AgentAction, AgentActivity, AgentOrder, TradingProfile
from app.users.models import Role, User
from app.wallets import service as wallets
from app.wallets.models import WalletKind
from common import clock
from ess_collector.forecast import SlotOutlook, battery_from_estimate, forecast
from ess_collector.models import Site

log = logging.getLogger(__name__)

AGENT_SLOTS = 4  # how far ahead the agent keeps orders in the book (an hour of 15-minute slots)
AGENT_INTERVAL_S = 10.0  # the market loop runs every second; the agent's forecasts need not
MIN_ORDER_WH = 10  # below this an order is not worth its escrow
# Without the device's reported power limits, a home battery moves about half its capacity per hour.
DEFAULT_C_RATE_DEN = 2
LIVE = (OrderStatus.pending_authorization, OrderStatus.open)


@dataclass(frozen=True)
class Want:
    """What the agent wants in the book for one slot and side, or why nothing."""

    quantity_wh: int
    price: int
    reason: str


def run_if_due(ctx: Context) -> None:
    """The market worker's hook: a pass every AGENT_INTERVAL_S seconds, or sooner when the energy clock
    runs fast (`essx demo`): at least five passes per slot."""
    wall, energy = time.monotonic(), clock.now()
    last_wall, last_energy = ctx.trading_last_pass or (0.0, None)
    slot = market.rules(ctx).slot
    if wall - last_wall < AGENT_INTERVAL_S and last_energy is not None and energy - last_energy < slot / 5:
        return
    ctx.trading_last_pass = (wall, energy)
    run_pass(ctx)


def run_pass(ctx: Context) -> None:
    """One pass over every profile; one user's failure is logged and does not stop the others."""
    r = market.rules(ctx)
    now = clock.now()
    slots = _upcoming_slots(r, now)
    with Session(ctx.engine, expire_on_commit=False) as session:
        user_ids = session.exec(select(TradingProfile.user_id)).all()
        for user_id in user_ids:
            try:
                # The market's lock first, then row locks (the price suggestion reads the book FOR UPDATE),
                # in the order the matcher and a cancel take them; the transaction ends with the user.
                with engine.slot_lock(ctx):
                    _trade_for(ctx, session, user_id, slots)
                    ctx.commit_background(session)
            except Exception:
                session.rollback()
                log.exception("automatic trading for user %s failed", user_id)


def _upcoming_slots(r: MarketRules, now: datetime) -> list[datetime]:
    first = r.slot_of(now)
    while r.gate_closure(first) <= now:
        first += r.slot
    return [first + i * r.slot for i in range(AGENT_SLOTS)]


def _trade_for(ctx: Context, session: Session, user_id: int, slots: list[datetime]) -> None:
    profile = session.get(TradingProfile, user_id)
    user = session.get(User, user_id)
    if profile is None or user is None:
        return
    if not profile.enabled:  # escrows still being locked when the profile was turned off
        service.cancel_agent_orders(ctx, session, user, "the profile was turned off")
        return
    site = session.get(Site, profile.site_id) if profile.site_id else None
    sells, buys = _wants(ctx, session, user, profile, site, slots)
    wallet = wallets.active_wallet(session, user_id)
    for slot_start in slots:
        if user.role == Role.prosumer and site is not None:
            _settle_side(ctx, session, user, profile, slot_start, OrderSide.sell, sells[slot_start])
        if wallet is not None and wallet.kind != WalletKind.custodial:
            want = Want(0, 0, "a linked wallet signs each escrow in its own app: the agent places sells only")
        else:
            want = buys[slot_start]
        _settle_side(ctx, session, user, profile, slot_start, OrderSide.buy, want)


def _wants(
    ctx: Context,
    session: Session,
    user: User,
    profile: TradingProfile,
    site: Site | None,
    slots: list[datetime],
) -> tuple[dict[datetime, Want], dict[datetime, Want]]:
    r = market.rules(ctx)
    if site is None or not site.enabled:
        use = profile.expected_use_wh or 0
        why = f"your expected use of {use} Wh per slot"
        if site is not None:
            why = f"site {site.id} is disabled: {why}"
        buys = {s: _priced(ctx, session, user, profile, s, OrderSide.buy, use, why) for s in slots}
        return {s: Want(0, 0, "no site") for s in slots}, buys
    estimates = [estimate_supply(session, site, s, ctx.settings) for s in slots]
    live_open = _live_open(session, user.id or 0, slots)
    outlook = []
    for s, e in zip(slots, estimates, strict=True):
        sold, bought = _committed(session, site.id or 0, s)
        outlook.append(
            SlotOutlook(
                slot_start=s,
                pv_wh=e.expected_pv_wh,
                load_wh=e.expected_load_wh,
                sold_wh=max(sold - live_open.get((s, OrderSide.sell), 0), 0),
                bought_wh=max(bought - live_open.get((s, OrderSide.buy), 0), 0),
            )
        )
    power = site.battery_capacity_wh // DEFAULT_C_RATE_DEN
    battery = battery_from_estimate(estimates[0], max_charge_w=power, max_discharge_w=power)
    battery = replace(battery, reserve_pct=max(site.reserve_soc_pct, profile.reserve_pct))
    plan = forecast(battery, outlook, r.slot_minutes * 60)
    sells, buys = {}, {}
    for s, e, f, o in zip(slots, estimates, plan, outlook, strict=True):
        room = e.supply_wh - o.sold_wh  # the market's own per-slot cap on what the site offers
        qty = min(f.plan_sell_wh, room)
        why = (
            f"forecast: PV {f.pv_wh} Wh, load {f.load_wh} Wh, battery {f.battery_wh} Wh keeping "
            f"{f.keep_wh} Wh (reserve {battery.reserve_pct} %), {f.sold_wh} Wh already sold"
        )
        sells[s] = _priced(ctx, session, user, profile, s, OrderSide.sell, qty, why)
        buys[s] = _priced(ctx, session, user, profile, s, OrderSide.buy, f.plan_buy_wh, why)
    return sells, buys


def _priced(
    ctx: Context,
    session: Session,
    user: User,
    profile: TradingProfile,
    slot: datetime,
    side: str,
    qty: int,
    why: str,
) -> Want:
    """The quantity (capped per slot) at the suggested price bounded by the profile's floor or ceiling."""
    filled = _agent_filled(session, user.id or 0, slot, side)
    qty = min(qty, profile.max_wh_per_slot - filled)
    if qty < MIN_ORDER_WH:
        return Want(
            0,
            0,
            f"nothing to {side} in this slot" if filled <= 0 else f"{filled} Wh of this slot already traded",
        )
    floor, ceiling = market.rules(ctx).band(slot)
    price = parse_amount(suggest(ctx, session, user.id or 0, slot, side)["suggested_price"])
    if side == OrderSide.sell and profile.sell_floor is not None:
        price = max(price, profile.sell_floor)
    if side == OrderSide.buy and profile.buy_ceiling is not None:
        price = min(price, profile.buy_ceiling)
    if not floor <= price <= ceiling:
        return Want(
            0,
            0,
            f"your {'sell floor' if side == OrderSide.sell else 'buy ceiling'} is outside this slot's band",
        )
    return Want(qty, price, why)


def _committed(session: Session, site_id: int, slot: datetime) -> tuple[int, int]:
    """(sold, bought) Wh of the site in the slot: open and matched orders of either side."""
    rows = session.exec(
        select(Order.side, Order.quantity_wh, Order.status).where(
            col(Order.site_id) == site_id,
            col(Order.slot_start) == slot,
            col(Order.status).in_((OrderStatus.pending_authorization, OrderStatus.open, OrderStatus.filled)),
        )
    ).all()
    sold = sum(q for side, q, _ in rows if side == OrderSide.sell)
    bought = sum(q for side, q, _ in rows if side == OrderSide.buy)
    return sold, bought


def _live(session: Session, user_id: int, slot: datetime, side: str) -> tuple[AgentOrder, Order] | None:
    row = session.exec(
        select(AgentOrder, Order)
        .join(Order, col(Order.id) == col(AgentOrder.order_id))
        .where(col(AgentOrder.live_key) == _key(user_id, slot, side))
    ).first()
    return (row[0], row[1]) if row else None


def _live_open(session: Session, user_id: int, slots: list[datetime]) -> dict[tuple[datetime, str], int]:
    """The open remainder of the agent's live orders: what this pass decides anew."""
    out: dict[tuple[datetime, str], int] = {}
    for s in slots:
        for side in (OrderSide.sell, OrderSide.buy):
            live = _live(session, user_id, s, side)
            if live and live[1].status in LIVE:
                out[(s, side)] = live[1].open_wh
    return out


def _agent_filled(session: Session, user_id: int, slot: datetime, side: str) -> int:
    rows = session.exec(
        select(Order.filled_wh)
        .join(AgentOrder, col(AgentOrder.order_id) == col(Order.id))
        .where(
            col(AgentOrder.user_id) == user_id,
            col(AgentOrder.slot_start) == slot,
            col(AgentOrder.side) == side,
        )
    ).all()
    return sum(rows)


def _key(user_id: int, slot: datetime, side: str) -> str:
    return f"{user_id}:{int(slot.timestamp())}:{side}"


def _settle_side(
    ctx: Context, session: Session, user: User, profile: TradingProfile, slot: datetime, side: str, want: Want
) -> None:
    """Makes the user's live order for (slot, side) match `want`: keep, cancel, or cancel and place."""
    live = _live(session, user.id or 0, slot, side)
    if live is not None and live[1].status not in LIVE:  # filled, expired, failed: no longer the live one
        live[0].live_key = None
        session.add(live[0])
        ctx.commit_background(session)
        live = None
    if live is not None:
        link, order = live
        if order.escrow_status == EscrowStatus.locking:
            return  # neither cancellable nor matchable yet: decided again once its lock is mined
        if _close_enough(ctx, order, want, slot):
            return
        why = "no longer wanted: " + want.reason if want.quantity_wh == 0 else "repriced: " + want.reason
        service.cancel_order(ctx, session, user, link, order, why)
    if want.quantity_wh == 0:
        _skip(ctx, session, user.id or 0, slot, side, want.reason)
        return
    qty = want.quantity_wh
    if side == OrderSide.buy:
        left = profile.daily_limit - service.spent_today(session, user.id or 0, clock.now())
        qty = min(qty, max(left, 0) * 1000 // want.price)
        while qty > 0 and escrow_amount(qty, want.price) > left:
            qty -= 1
        if qty < MIN_ORDER_WH:
            _skip(ctx, session, user.id or 0, slot, side, "the daily spending limit is reached")
            return
    _place(ctx, session, user, profile, slot, side, qty, want)


def _close_enough(ctx: Context, order: Order, want: Want, slot: datetime) -> bool:
    """Keep a live order whose price is within 5 % of the band and whose open quantity is 90-100 % of
    the wanted one: repricing a buy costs an escrow release and a lock."""
    floor, ceiling = market.rules(ctx).band(slot)
    return (
        want.quantity_wh > 0
        and abs(order.limit_price - want.price) <= (ceiling - floor) // 20
        and want.quantity_wh * 9 // 10 <= order.open_wh <= want.quantity_wh
    )


def _place(
    ctx: Context,
    session: Session,
    user: User,
    profile: TradingProfile,
    slot: datetime,
    side: str,
    qty: int,
    want: Want,
) -> None:
    req = OrderCreate(
        side=side,  # type: ignore[arg-type]
        slot_start=slot,
        quantity_wh=qty,
        limit_price=format_amount(want.price),
        site_id=profile.site_id,
    )

    def link(order: Order) -> None:
        session.add(
            AgentOrder(
                order_id=order.id,
                user_id=user.id or 0,
                slot_start=slot,
                side=side,
                live_key=_key(user.id or 0, slot, side),
                placed_at=utcnow(),
            )
        )
        service.note(session, user.id or 0, AgentAction.placed, want.reason, order=order, quantity_wh=qty)

    try:
        order = market.place_for_agent(ctx, session, user, req, link)
    except IntegrityError:  # another pass placed this slot's order meanwhile: it is the live one
        session.rollback()
        return
    except AppError as exc:
        session.rollback()
        _skip(ctx, session, user.id or 0, slot, side, f"the market refused the order: {exc.detail}")
        return
    crash_point("trading.after_place")
    log.info("agent placed %s %s Wh for user %s in %s: %s", side, qty, user.id, slot, order.id)


def _skip(ctx: Context, session: Session, user_id: int, slot: datetime, side: str, reason: str) -> None:
    """Notes why nothing was placed, once per slot, side and reason (not every pass)."""
    last = session.exec(
        select(AgentActivity.action, AgentActivity.reason)
        .where(
            col(AgentActivity.user_id) == user_id,
            col(AgentActivity.slot_start) == slot,
            col(AgentActivity.side) == side,
        )
        .order_by(col(AgentActivity.id).desc())
    ).first()
    if last is not None and tuple(last) == (AgentAction.skipped, reason[:300]):
        return
    service.note(session, user_id, AgentAction.skipped, reason, slot_start=slot, side=side)
    ctx.commit_background(session)
