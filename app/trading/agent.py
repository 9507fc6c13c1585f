"""The automatic trader: run by the market's background worker (the lease holder) on every pass.

For each enabled profile and each of the next ``AGENT_SLOTS`` slots whose gate is still open, it decides
what the user should have in the book on each side, and places, reprices or cancels that user's orders
to match, through the market's own order rules and escrow (app/market/service.py):

- sell: what the site can deliver (app/trading/planning.py): the battery followed from now through the
  slot in delivery and the slots whose gate has closed, then a joint plan of the open slots
  (ess_collector/forecast.py: power limits, efficiency, the profile's reserve, every commitment kept) on a
  pessimistic outlook (the measured sky, the larger of the expected and measured load, margins), within
  the profile's maximum per slot;
- buy: what the site will surely import (the same plan on an optimistic outlook), or the expected use
  (no site), within what is left of the daily spending limit;
- price: the price suggestion, never below the sell floor nor above the buy ceiling, inside the band;
  a live order is repriced only when the suggestion moves by more than a step (5 % of the band), near
  the gate closure more closely, and whenever it is larger than what is wanted.

Idempotent: an order and the agent's link to it (``AgentOrder.live_key``, unique per user, slot and side)
commit together, so a pass killed anywhere leaves either both or neither, and the next pass sees what is
live instead of placing it again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
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
from app.market.matching.types import BookLevels, escrow_amount
from app.market.models import EscrowStatus, Order, OrderSide, OrderStatus
from app.market.rules import MarketRules
from app.market.schemas import OrderCreate
from app.settlement import pricing
from app.sites.service import supply_config
from app.trading import planning, service
from app.trading.models import AgentAction, AgentActivity, AgentOrder, TradingProfile
from app.users.models import Role, User
from app.wallets import service as wallets
from app.wallets.models import Wallet, WalletKind
from common import clock
from ess_collector.models import Site
from ess_collector.supply import estimate_run, mean_power_since, site_battery
from wallet.signer import LocalSigner

log = logging.getLogger(__name__)

AGENT_SLOTS = 4  # how far ahead the agent keeps orders in the book (an hour of 15-minute slots)
AGENT_INTERVAL_S = 10.0  # the market loop runs every second; the agent's forecasts need not
MIN_ORDER_WH = 10  # below this an order is not worth its escrow
NEAR_GATE_PCT = (
    25  # within this share of a slot before its gate closure, orders follow the suggestion closely
)
LIVE = (OrderStatus.pending_authorization, OrderStatus.open)


@dataclass(frozen=True)
class Want:
    """What the agent wants in the book for one slot and side, or why nothing."""

    quantity_wh: int
    price: int
    reason: str


@dataclass
class _Turn:
    """One user's turn in a pass: what deciding and placing that user's orders reads and writes through,
    and what the turn reads once for all its slots (each when first needed: one statement, not one per
    slot and side). The turn holds the market's lock, and only it places or cancels the agent's orders
    of this user meanwhile."""

    ctx: Context
    session: Session
    user: User
    profile: TradingProfile
    slots: list[datetime]
    wallet: Wallet | None = None
    _filled: dict[tuple[datetime, str], int] | None = None
    _own_open: dict[datetime, list[tuple[str, int, int]]] | None = None
    _live: dict[tuple[datetime, str], tuple[AgentOrder, Order]] | None = None
    _spent: int | None = None  # today's committed buy escrow (`service.spent_today`), kept current
    _signer: LocalSigner | None = field(default=None, repr=False)
    _pricing: pricing.Inputs | None = None

    def price_inputs(self) -> pricing.Inputs:
        """The price suggestion's reads about this user (month's kWh, last trades): once for all slots."""
        if self._pricing is None:
            self._pricing = pricing.inputs(self.session, self.user.id or 0, clock.now())
        return self._pricing

    def filled(self, slot: datetime, side: str) -> int:
        """Wh the agent's orders for the slot and side have traded (`_agent_filled`)."""
        if self._filled is None:
            self._filled = _agent_filled(self.session, self.user.id or 0, self.slots)
        return self._filled.get((slot, side), 0)

    def own_open(self, slot: datetime) -> list[tuple[str, int, int]]:
        if self._own_open is None:
            self._own_open = _own_open(self.session, self.user.id or 0, self.slots)
        return self._own_open.get(slot, [])

    def live(self, slot: datetime, side: str) -> tuple[AgentOrder, Order] | None:
        if self._live is None:
            self._live = _lives(self.session, self.user.id or 0, self.slots)
        return self._live.get((slot, side))

    def spent(self) -> int:
        if self._spent is None:
            self._spent = service.spent_today(self.session, self.user.id or 0, clock.now())
        return self._spent

    def placed(self, order: Order) -> None:
        """A buy's escrow counts against the daily limit from its placement (its whole amount)."""
        if order.side == OrderSide.buy and self._spent is not None:
            self._spent += order.escrow_amount

    def cancelled(self) -> None:
        """A cancelled buy's unfilled escrow is free again: the sum is read anew when next needed."""
        self._spent = None

    def signer(self, wallet: Wallet) -> LocalSigner:
        """The custodial key, opened once per turn (not per order); dropped with the turn."""
        if self._signer is None or self._signer.address != wallet.address:
            self._signer = wallets.signer_for(self.ctx, wallet)
        return self._signer


def run_if_due(ctx: Context) -> None:
    """The market worker's hook: a pass every AGENT_INTERVAL_S seconds, or sooner when the energy clock
    runs fast (`essx demo`): at least five passes per slot."""
    wall, energy = time.monotonic(), clock.now()
    last_wall, last_energy = ctx.trading_last_pass or (0.0, None)
    r = market.rules(ctx)
    slot = r.slot
    latest_gate = r.gate_closure(_upcoming_slots(r, energy)[0] - slot)
    if ctx.trading_gate_seen != latest_gate:
        # a gate closed since the last look: the market's pass (next in this thread) matches that slot
        # first, so its trades exist when the slot starts and dispatch reads them
        ctx.trading_gate_seen = latest_gate
        return
    if wall - last_wall < AGENT_INTERVAL_S and last_energy is not None and energy - last_energy < slot / 5:
        return
    ctx.trading_last_pass = (wall, energy)
    run_pass(ctx)


def run_pass(ctx: Context) -> None:
    """One pass over every profile; one user's failure is logged and does not stop the others.

    The pass runs before the market's own pass in the same thread: when a gate closes while it runs, it
    stops so that slot is matched now (dispatch needs its trades at the slot's start), and the next pass
    begins with the users this one did not reach."""
    r = market.rules(ctx)
    now = clock.now()
    slots = _upcoming_slots(r, now)
    ctx.market_levels.clear()  # the pass starts from the book as it is
    with Session(ctx.engine, expire_on_commit=False) as session:
        user_ids = sorted(session.exec(select(TradingProfile.user_id)).all())
        after = ctx.trading_resume_after
        user_ids = [u for u in user_ids if u > after] + [u for u in user_ids if u <= after]
        ctx.trading_resume_after = 0
        for user_id in user_ids:
            if clock.now() >= r.gate_closure(slots[0]):
                ctx.trading_resume_after = user_id - 1
                return
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
    turn = _Turn(ctx, session, user, profile, slots)
    sells, buys = _wants(turn, site, slots)
    wallet = turn.wallet = wallets.active_wallet(session, user_id)
    for slot_start in slots:
        if user.role == Role.prosumer and site is not None:
            _settle_side(turn, slot_start, OrderSide.sell, sells[slot_start])
        if wallet is not None and wallet.kind != WalletKind.custodial:
            want = Want(0, 0, "a linked wallet signs each escrow in its own app: the agent places sells only")
        else:
            want = buys[slot_start]
        _settle_side(turn, slot_start, OrderSide.buy, want)


def _wants(
    turn: _Turn, site: Site | None, slots: list[datetime]
) -> tuple[dict[datetime, Want], dict[datetime, Want]]:
    if site is None or not site.enabled:
        use = turn.profile.expected_use_wh or 0
        why = f"your expected use of {use} Wh per slot"
        if site is not None:
            why = f"site {site.id} is disabled: {why}"
        buys = {s: _priced(turn, s, OrderSide.buy, use, why) for s in slots}
        return {s: Want(0, 0, "no site") for s in slots}, buys
    return _site_wants(turn, site, slots)


def _site_wants(
    turn: _Turn, site: Site, slots: list[datetime]
) -> tuple[dict[datetime, Want], dict[datetime, Want]]:
    """The site's plan (app/trading/planning.py) from the slot in delivery through the last upcoming one:
    sells it can deliver and buys it will import, priced."""
    ctx, session, profile = turn.ctx, turn.session, turn.profile
    r = market.rules(ctx)
    now = clock.now()
    current = r.slot_of(now)
    run = [current + k * r.slot for k in range((slots[-1] - current) // r.slot + 1)]
    cfg = supply_config(ctx.settings)
    estimates = estimate_run(session, site, [current - r.slot, *run], cfg, now=now)
    previous, in_delivery, ahead = estimates[0], estimates[1], estimates[2:]
    live_open = _live_open(turn, slots)
    inputs = []
    for e in [in_delivery, *ahead]:
        sold, bought = _committed(session, site.id or 0, e.slot_start)
        inputs.append(
            planning.SlotInput(
                slot_start=e.slot_start,
                pv_wh=e.expected_pv_wh,
                load_wh=e.expected_load_wh,
                sold_wh=max(sold - live_open.get((e.slot_start, OrderSide.sell), 0), 0),
                bought_wh=max(bought - live_open.get((e.slot_start, OrderSide.buy), 0), 0),
                gate_open=e.slot_start in slots,
            )
        )
    battery = site_battery(site, in_delivery, cfg)
    battery = replace(battery, reserve_pct=max(site.reserve_soc_pct, profile.reserve_pct))
    slot_s = r.slot_minutes * 60
    # the sky and the household now, against what the estimate expected over the last slot
    expected_w = (previous.expected_pv_wh + in_delivery.expected_pv_wh) * 3600 // (2 * slot_s)
    power = mean_power_since(session, site.id or 0, now - r.slot)
    measured = (
        None
        if power is None
        else planning.Measured(pv_w=power.pv_w, load_w=power.load_w, expected_pv_w=expected_w)
    )
    plan = planning.plan_site(
        battery,
        inputs[1:],
        slot_s,
        current=inputs[0],
        seconds_left=int((current + r.slot - now).total_seconds()),
        measured=measured,
    )
    sells, buys = {}, {}
    for p in plan:
        why = (
            f"plan: PV {p.pv_wh} Wh, load {p.load_wh} Wh (with margins), battery {p.battery_wh} Wh keeping "
            f"{p.keep_wh} Wh (reserve {battery.reserve_pct} %, {battery.max_discharge_w} W at most)"
        )
        sells[p.slot_start] = _priced(turn, p.slot_start, OrderSide.sell, p.sell_wh, why)
        buys[p.slot_start] = _priced(turn, p.slot_start, OrderSide.buy, p.buy_wh, why)
    return sells, buys


def _priced(turn: _Turn, slot: datetime, side: str, qty: int, why: str) -> Want:
    """The quantity (capped per slot) at the suggested price bounded by the profile's floor or ceiling."""
    ctx, session, profile = turn.ctx, turn.session, turn.profile
    filled = turn.filled(slot, side)
    qty = min(qty, profile.max_wh_per_slot - filled)
    if qty < MIN_ORDER_WH:
        return Want(
            0,
            0,
            f"nothing to {side} in this slot" if filled <= 0 else f"{filled} Wh of this slot already traded",
        )
    floor, ceiling = market.rules(ctx).band(slot)
    levels = engine.recent_book_levels(ctx, session, slot)  # one read per slot and second, not per user
    levels = _without_own(levels, turn.own_open(slot))
    suggestion = pricing.suggest(ctx, session, turn.user.id or 0, slot, side, levels, turn.price_inputs())
    price = parse_amount(suggestion["suggested_price"])
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


def _own_open(
    session: Session, user_id: int, slots: list[datetime]
) -> dict[datetime, list[tuple[str, int, int]]]:
    """Per slot, (side, price, open Wh) of the user's open orders, as the public book counts them."""
    rows = session.exec(
        select(Order.slot_start, Order.side, Order.limit_price, Order.open_wh).where(
            col(Order.user_id) == user_id,
            col(Order.slot_start).in_(slots),
            col(Order.status) == OrderStatus.open,
            col(Order.counterpart_id).is_(None),
        )
    ).all()
    out: dict[datetime, list[tuple[str, int, int]]] = {}
    for slot, side, price, wh in rows:
        out.setdefault(slot, []).append((str(side), int(price), int(wh)))
    return out


def _without_own(levels: BookLevels, own: list[tuple[str, int, int]]) -> BookLevels:
    """The book as the rest of the market shows it: a user's price follows the others' orders, not the
    user's own (else a pass reprices against the order the previous pass placed, near the gate at once)."""
    if not own:
        return levels
    bids, asks = dict(levels["bids"]), dict(levels["asks"])
    for side, price, wh in own:
        book = bids if side == OrderSide.buy else asks
        if price in book:
            book[price] -= wh
    return {
        "bids": sorted(((p, q) for p, q in bids.items() if q > 0), reverse=True),
        "asks": sorted((p, q) for p, q in asks.items() if q > 0),
    }


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


def _lives(
    session: Session, user_id: int, slots: list[datetime]
) -> dict[tuple[datetime, str], tuple[AgentOrder, Order]]:
    """The agent's live order (and its link) per slot and side, by the links' unique live keys."""
    keys = [_key(user_id, s, side) for s in slots for side in (OrderSide.sell, OrderSide.buy)]
    by_key = {_key(user_id, s, side): (s, side) for s in slots for side in (OrderSide.sell, OrderSide.buy)}
    rows = session.exec(
        select(AgentOrder, Order)
        .join(Order, col(Order.id) == col(AgentOrder.order_id))
        .where(col(AgentOrder.live_key).in_(keys))
    ).all()
    return {by_key[link.live_key]: (link, order) for link, order in rows if link.live_key in by_key}


def _live_open(turn: _Turn, slots: list[datetime]) -> dict[tuple[datetime, str], int]:
    """The open remainder of the agent's live orders: what this pass decides anew."""
    out: dict[tuple[datetime, str], int] = {}
    for s in slots:
        for side in (OrderSide.sell, OrderSide.buy):
            live = turn.live(s, side)
            if live and live[1].status in LIVE:
                out[(s, side)] = live[1].open_wh
    return out


def _agent_filled(session: Session, user_id: int, slots: list[datetime]) -> dict[tuple[datetime, str], int]:
    """Per slot and side, the Wh the agent's orders (live or not) have traded."""
    rows = session.exec(
        select(AgentOrder.slot_start, AgentOrder.side, Order.filled_wh)
        .join(Order, col(Order.id) == col(AgentOrder.order_id))
        .where(col(AgentOrder.user_id) == user_id, col(AgentOrder.slot_start).in_(slots))
    ).all()
    out: dict[tuple[datetime, str], int] = {}
    for slot, side, wh in rows:
        out[(slot, str(side))] = out.get((slot, str(side)), 0) + wh
    return out


def _key(user_id: int, slot: datetime, side: str) -> str:
    return f"{user_id}:{int(slot.timestamp())}:{side}"


def _settle_side(turn: _Turn, slot: datetime, side: str, want: Want) -> None:
    """Makes the user's live order for (slot, side) match `want`: keep, cancel, or cancel and place."""
    ctx, session, user, profile = turn.ctx, turn.session, turn.user, turn.profile
    live = turn.live(slot, side)
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
        turn.cancelled()
    if want.quantity_wh == 0:
        _skip(ctx, session, user.id or 0, slot, side, want.reason)
        return
    qty = want.quantity_wh
    if side == OrderSide.buy:
        left = profile.daily_limit - turn.spent()
        qty = min(qty, max(left, 0) * 1000 // want.price)
        while qty > 0 and escrow_amount(qty, want.price) > left:
            qty -= 1
        if qty < MIN_ORDER_WH:
            _skip(ctx, session, user.id or 0, slot, side, "the daily spending limit is reached")
            return
    _place(turn, slot, side, qty, want)


def _close_enough(ctx: Context, order: Order, want: Want, slot: datetime) -> bool:
    """Keep a live order unless the wanted price moved by more than a step (5 % of the band), its size
    fell short or is more than wanted; near the gate closure the latest suggestion counts more closely
    (app/trading/planning.py, ``keep_live``). Repricing a buy costs an escrow release and a signature."""
    r = market.rules(ctx)
    floor, ceiling = r.band(slot)
    return planning.keep_live(
        open_wh=order.open_wh,
        live_price=order.limit_price,
        want_wh=want.quantity_wh,
        want_price=want.price,
        price_step=(ceiling - floor) // 20,
        near_gate=r.gate_closure(slot) - clock.now() <= r.slot * NEAR_GATE_PCT // 100,
    )


def _place(turn: _Turn, slot: datetime, side: str, qty: int, want: Want) -> None:
    ctx, session, user, profile = turn.ctx, turn.session, turn.user, turn.profile
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
        order = market.place_for_agent(ctx, session, user, req, link, wallet=turn.wallet, signer=turn.signer)
    except IntegrityError:  # another pass placed this slot's order meanwhile: it is the live one
        session.rollback()
        return
    except AppError as exc:
        session.rollback()
        _skip(ctx, session, user.id or 0, slot, side, f"the market refused the order: {exc.detail}")
        return
    turn.placed(order)
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
