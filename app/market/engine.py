"""Matching, recording and gate closure: the market's background work, restart-safe.

Continuous matching keeps each open slot's book in memory (`app/market/book.py`), current with the
orders changed since the last pass; fills are committed together with the order updates, and a failed
pass drops the books, so after a crash or a failure the rebuilt book finds the same fills again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from app.context import Context
from app.core.security import utcnow
from app.events.service import emit
from app.market import escrow, levels
from app.market.book import LiveBooks
from app.market.matching.auction import clear_call_auction
from app.market.matching.types import BookLevels, Fill, Side, trade_value
from app.market.matching.types import Order as MatchOrder
from app.market.models import EscrowStatus, Order, OrderSide, OrderStatus, Trade, TradeStatus, next_change
from app.market.onchain import order_hash, orders_hash
from app.market.rules import MarketRules
from app.wallets.models import Wallet

log = logging.getLogger(__name__)


def slot_lock(ctx: Context) -> threading.RLock:
    return ctx.market_lock


def kick(ctx: Context) -> None:
    ctx.market_wake.set()


def next_seq(session: Session) -> int:
    """An order's time priority, from the change counter: committed in the order given, so an order
    that reaches the book later never has an earlier seq than one already in it."""
    return next_change(session.connection())


def live_books(ctx: Context) -> LiveBooks:
    if ctx.market_books is None:
        ctx.market_books = LiveBooks()
    books: LiveBooks = ctx.market_books
    return books


def match_open_slots(ctx: Context, session: Session, gate_open: Callable[[datetime], bool]) -> list[Trade]:
    """Continuous pay-as-bid: what the orders changed since the last pass cross, committed as trades."""
    return [_book_fill(ctx, session, f) for f in live_books(ctx).match(session, gate_open)]


def book_orders(session: Session, slot_start: datetime) -> list[MatchOrder]:
    """A slot's open book orders in arrival order, row-locked: what the call auction clears."""
    rows = session.exec(
        select(Order)
        .where(
            col(Order.slot_start) == slot_start,
            col(Order.status) == OrderStatus.open,
            col(Order.counterpart_id).is_(None),
        )
        .order_by(col(Order.seq), col(Order.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return [
        MatchOrder(
            id=o.id,
            owner=str(o.user_id),
            side=Side(o.side),
            quantity_wh=o.open_wh,
            limit_price=o.limit_price,
            seq=o.seq or 0,
        )
        for o in rows
    ]


def book_levels(session: Session, slot_start: datetime) -> BookLevels:
    """The public book from one GROUP BY per price level: no order is loaded."""
    rows = session.exec(
        select(Order.side, Order.limit_price, func.sum(Order.open_wh))
        .where(
            col(Order.slot_start) == slot_start,
            col(Order.status) == OrderStatus.open,
            col(Order.counterpart_id).is_(None),
        )
        .group_by(col(Order.side), col(Order.limit_price))
    ).all()
    bids = sorted(((int(p), int(q)) for side, p, q in rows if side == OrderSide.buy), reverse=True)
    asks = sorted((int(p), int(q)) for side, p, q in rows if side == OrderSide.sell)
    return {"bids": bids, "asks": asks}


def public_levels(ctx: Context, session: Session, slot_start: datetime) -> BookLevels:
    """What `book_levels` answers, from this process's levels kept current by the orders changed since
    its last read (`app/market/levels.py`): no scan of the slot's open orders."""
    kept = levels.for_context(ctx).read(session.connection(), slot_start)
    return kept if kept is not None else book_levels(session, slot_start)


LEVELS_FRESH_SECONDS = 1.0


def recent_book_levels(ctx: Context, session: Session, slot_start: datetime) -> BookLevels:
    """A slot's book levels read within the last second: for the automatic trader's price suggestions,
    which advise and bind nothing (it asks once per user and slot)."""
    now = time.monotonic()
    cached = ctx.market_levels.get(slot_start)
    if cached is not None and now - cached[0] < LEVELS_FRESH_SECONDS:
        levels_: BookLevels = cached[1]
        return levels_
    levels_ = public_levels(ctx, session, slot_start)
    if len(ctx.market_levels) > 64:
        ctx.market_levels.clear()
    ctx.market_levels[slot_start] = (now, levels_)
    return levels_


def _book_fill(ctx: Context, session: Session, fill: Fill) -> Trade:
    buy = session.get(Order, fill.buy_order_id)
    sell = session.get(Order, fill.sell_order_id)
    assert buy is not None and sell is not None
    now = utcnow()
    for o in (buy, sell):
        o.open_wh -= fill.quantity_wh
        o.filled_wh += fill.quantity_wh
        if o.open_wh == 0:
            o.status = OrderStatus.filled
        o.updated_at = now
        session.add(o)
    buy_hash = order_hash(
        buy.id, buy.user_id, OrderSide.buy, buy.slot_start, buy.quantity_wh, buy.limit_price
    )
    sell_hash = order_hash(
        sell.id, sell.user_id, OrderSide.sell, sell.slot_start, sell.quantity_wh, sell.limit_price
    )
    trade = Trade(
        id=uuid.uuid4().hex,
        slot_start=buy.slot_start,
        buy_order_id=buy.id,
        sell_order_id=sell.id,
        buyer_id=buy.user_id,
        seller_id=sell.user_id,
        quantity_wh=fill.quantity_wh,
        price=fill.price,
        value=trade_value(fill.quantity_wh, fill.price),
        buy_limit_price=buy.limit_price,
        orders_hash="0x" + orders_hash(buy_hash, sell_hash).hex(),
        status=TradeStatus.matched,
        created_at=now,
        updated_at=now,
    )
    session.add(trade)
    for user_id, order_id in ((buy.user_id, buy.id), (sell.user_id, sell.id)):
        emit(
            session,
            user_id,
            "order.matched",
            order_id=order_id,
            trade_id=trade.id,
            quantity_wh=fill.quantity_wh,
        )
    return trade


def seller_address(session: Session, user_id: int) -> str | None:
    w = session.exec(
        select(Wallet).where(col(Wallet.user_id) == user_id, col(Wallet.active).is_(True))
    ).first()
    return w.address if w else None


def close_gates(ctx: Context, session: Session, rules_: object, now: datetime) -> int:
    """Past gate closure: the call auction clears (pay-as-clear), then every remainder expires."""

    assert isinstance(rules_, MarketRules)
    closed = 0
    pending = session.exec(
        select(Order.slot_start)
        .where(
            col(Order.status).in_((OrderStatus.open, OrderStatus.pending_authorization)),
            col(Order.slot_start) <= now + timedelta(minutes=rules_.gate_closure_minutes),
        )
        .distinct()
    ).all()
    for slot_start in pending:
        if rules_.gate_closure(slot_start) > now:
            continue
        if rules_.mechanism == "call":
            result = clear_call_auction(book_orders(session, slot_start))
            for fill in result.fills:
                _book_fill(ctx, session, fill)
        for o in session.exec(
            select(Order)
            .where(
                col(Order.slot_start) == slot_start,
                col(Order.status).in_((OrderStatus.open, OrderStatus.pending_authorization)),
            )
            .with_for_update()
            .execution_options(populate_existing=True)
        ):
            if o.escrow_status == EscrowStatus.locking:
                continue  # expires once its lock is final
            o.status, o.updated_at = OrderStatus.expired, utcnow()
            escrow.close_unmatched(session, o)
            session.add(o)
            emit(session, o.user_id, "order.expired", order_id=o.id, open_wh=o.open_wh)
            closed += 1
    return closed
