"""Matching, recording and gate closure: the market's background work, restart-safe.

Continuous matching replays a slot's open orders in arrival order into a fresh book: resting orders never
cross each other, so every fill the replay finds is new. That makes matching idempotent: after a crash the
same open orders give the same fills, and fills are committed together with the order updates.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime

from sqlmodel import Session, col, func, select

from app.context import Context
from app.core.security import utcnow
from app.events.service import emit
from app.market import escrow
from app.market.matching.auction import clear_call_auction
from app.market.matching.continuous import ContinuousBook
from app.market.matching.types import Fill, Side, trade_value
from app.market.matching.types import Order as MatchOrder
from app.market.models import Order, Trade
from app.market.onchain import order_hash, orders_hash
from app.market.rules import MarketRules
from app.wallets.models import Wallet

log = logging.getLogger(__name__)


def slot_lock(ctx: Context) -> threading.RLock:
    return ctx.market_lock


def kick(ctx: Context) -> None:
    ctx.market_wake.set()


def next_seq(session: Session) -> int:
    current = session.exec(select(func.max(Order.seq))).one()
    return int(current or 0) + 1


def book_orders(session: Session, slot_start: datetime) -> list[MatchOrder]:
    rows = session.exec(
        select(Order)
        .where(
            col(Order.slot_start) == slot_start,
            col(Order.status) == "open",
            col(Order.counterpart_id).is_(None),
        )
        .order_by(col(Order.seq), col(Order.id))  # ties (seq given by two processes) replay the same way
        .with_for_update()  # a cancel in another API process waits for this pass (PostgreSQL)
        .execution_options(populate_existing=True)
    ).all()
    return [_as_match(o) for o in rows]


def _as_match(o: Order) -> MatchOrder:
    return MatchOrder(
        id=o.id,
        owner=str(o.user_id),
        side=Side(o.side),
        quantity_wh=o.open_wh,
        limit_price=o.limit_price,
        seq=o.seq or 0,
    )


def match_slot(ctx: Context, session: Session, slot_start: datetime) -> list[Trade]:
    """Continuous pay-as-bid: replay the open orders in arrival order; commit what crosses as trades."""
    fills: list[Fill] = []
    book = ContinuousBook()
    for order in book_orders(session, slot_start):
        fills.extend(book.submit(order))
    fills.extend(_direct_fills(session, slot_start))
    return [_book_fill(ctx, session, f) for f in fills]


def _direct_fills(session: Session, slot_start: datetime) -> list[Fill]:
    """Direct offers match only the counterpart's order that names them back, at the seller's price."""
    rows = session.exec(
        select(Order)
        .where(
            col(Order.slot_start) == slot_start,
            col(Order.status) == "open",
            col(Order.counterpart_id).is_not(None),
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    fills = []
    sells = {(o.user_id, o.counterpart_id): o for o in rows if o.side == "sell"}
    left = {o.id: o.open_wh for o in rows}  # what is still open as the pairs are filled
    for buy in sorted((o for o in rows if o.side == "buy"), key=lambda o: o.seq or 0):
        sell = sells.get((buy.counterpart_id or 0, buy.user_id))
        if sell is None or buy.limit_price < sell.limit_price:
            continue
        q = min(left[buy.id], left[sell.id])
        if q > 0:
            left[buy.id] -= q
            left[sell.id] -= q
            fills.append(Fill(buy.id, sell.id, q, sell.limit_price))
    return fills


def _book_fill(ctx: Context, session: Session, fill: Fill) -> Trade:
    buy = session.get(Order, fill.buy_order_id)
    sell = session.get(Order, fill.sell_order_id)
    assert buy is not None and sell is not None
    now = utcnow()
    for o in (buy, sell):
        o.open_wh -= fill.quantity_wh
        o.filled_wh += fill.quantity_wh
        if o.open_wh == 0:
            o.status = "filled"
        o.updated_at = now
        session.add(o)
    buy_hash = order_hash(buy.id, buy.user_id, "buy", buy.slot_start, buy.quantity_wh, buy.limit_price)
    sell_hash = order_hash(sell.id, sell.user_id, "sell", sell.slot_start, sell.quantity_wh, sell.limit_price)
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
        status="matched",
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


def slots_with_open_orders(session: Session) -> list[datetime]:
    return list(session.exec(select(Order.slot_start).where(col(Order.status) == "open").distinct()))


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
        select(Order.slot_start).where(col(Order.status).in_(("open", "pending_authorization"))).distinct()
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
                col(Order.slot_start) == slot_start, col(Order.status).in_(("open", "pending_authorization"))
            )
            .with_for_update()
            .execution_options(populate_existing=True)
        ):
            if o.escrow_status == "locking":
                continue  # expires once its lock is final
            o.status, o.updated_at = "expired", utcnow()
            escrow.close_unmatched(session, o)
            session.add(o)
            emit(session, o.user_id, "order.expired", order_id=o.id, open_wh=o.open_wh)
            closed += 1
    return closed
