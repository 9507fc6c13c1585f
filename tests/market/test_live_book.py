"""The market worker's in-memory book against the matcher it replaced (every open order replayed each
pass), on SQLite and PostgreSQL: random placements, cancels and direct offers over several passes give
the same fills, and a restart (a new engine, a new book built from the database) reaches the same state.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.core.db import make_engine
from app.market import engine
from app.market.book import LiveBooks
from app.market.matching.continuous import ContinuousBook
from app.market.matching.types import Fill, Side
from app.market.matching.types import Order as MatchOrder
from app.market.models import Order, Trade
from app.users.models import User

SLOTS = [datetime(2030, 1, 1, 10, tzinfo=UTC) + timedelta(minutes=15 * i) for i in range(2)]


def replayed_fills(session: Session) -> list[Fill]:
    """The matcher before the in-memory book: every open order of a slot replayed in (seq, id) order into
    a fresh book, then direct offers paired with the counterpart's order naming them back."""
    fills: list[Fill] = []
    for slot in SLOTS:
        rows = session.exec(
            select(Order)
            .where(col(Order.slot_start) == slot, col(Order.status) == "open")
            .order_by(col(Order.seq), col(Order.id))
        ).all()
        book = ContinuousBook()
        for o in rows:
            if o.counterpart_id is None:
                fills += book.submit(
                    MatchOrder(o.id, str(o.user_id), Side(o.side), o.open_wh, o.limit_price, o.seq or 0)
                )
        direct = [o for o in rows if o.counterpart_id is not None]
        sells = {(o.user_id, o.counterpart_id): o for o in direct if o.side == "sell"}
        left = {o.id: o.open_wh for o in direct}
        for buy in (o for o in direct if o.side == "buy"):
            sell = sells.get((buy.counterpart_id or 0, buy.user_id))
            if sell is None or buy.limit_price < sell.limit_price:
                continue
            q = min(left[buy.id], left[sell.id])
            if q > 0:
                left[buy.id] -= q
                left[sell.id] -= q
                fills.append(Fill(buy.id, sell.id, q, sell.limit_price))
    return fills


def users(db: Engine, n: int) -> list[int]:
    now = datetime.now(UTC)
    with Session(db) as s:
        rows = [
            User(
                email=f"{uuid.uuid4().hex}@book.test",
                password_hash="x",
                display_name="u",
                role="prosumer",
                status="approved",
                created_at=now,
            )
            for _ in range(n)
        ]
        s.add_all(rows)
        s.commit()
        return [u.id or 0 for u in rows]


def place_and_cancel(db: Engine, rng: random.Random, owners: list[int], placed: int, cancelled: int) -> None:
    """Orders as the API writes them (each takes its seq from the counter), prices crossing often."""
    now = datetime.now(UTC)
    with Session(db) as s:
        for _ in range(placed):
            user, side = rng.choice(owners), rng.choice(("buy", "sell"))
            qty = rng.randrange(100, 2000, 100)
            direct = rng.random() < 0.15
            counterpart = rng.choice([o for o in owners if o != user]) if direct else None
            s.add(
                Order(
                    id=uuid.uuid4().hex,
                    user_id=user,
                    side=side,
                    slot_start=rng.choice(SLOTS),
                    quantity_wh=qty,
                    open_wh=qty,
                    limit_price=rng.randrange(95, 106) * 10**16,
                    counterpart_id=counterpart,
                    status="open",
                    seq=engine.next_seq(s),
                    created_at=now,
                    updated_at=now,
                )
            )
            s.flush()
        open_ids = list(s.exec(select(Order.id).where(col(Order.status) == "open")))
        for order_id in rng.sample(open_ids, min(cancelled, len(open_ids))):
            order = s.get(Order, order_id)
            assert order is not None
            order.status, order.open_wh = "cancelled", 0
            s.add(order)
        s.commit()


def matching_pass(db: Engine, ctx: Any) -> list[Fill]:
    """One pass of the worker's matcher; returns its fills (read back from the trades it wrote)."""
    with Session(db) as s:
        before = set(s.exec(select(Trade.id)))
        engine.match_open_slots(ctx, s, lambda _slot: True)
        s.commit()
        return [
            Fill(t.buy_order_id, t.sell_order_id, t.quantity_wh, t.price)
            for t in s.exec(select(Trade)).all()
            if t.id not in before
        ]


def expected(db: Engine) -> list[Fill]:
    with Session(db) as s:
        return replayed_fills(s)


def resting(ctx: Any) -> dict[datetime, list[MatchOrder]]:
    books: LiveBooks = ctx.market_books
    return {slot: book.open_orders() for slot, book in books._books.items() if len(book)}


def test_the_live_book_finds_what_a_full_replay_finds_and_a_restart_the_same_state(
    clean_db: Engine, db_url: str
) -> None:
    rng = random.Random(15)
    owners = users(clean_db, 6)
    ctx: Any = SimpleNamespace(market_books=None)
    traded = 0
    for round_no in range(12):
        place_and_cancel(clean_db, rng, owners, placed=rng.randrange(1, 25), cancelled=rng.randrange(0, 4))
        want = expected(clean_db)
        got = matching_pass(clean_db, ctx)
        assert sorted(got) == sorted(want), f"round {round_no}"
        traded += len(got)
        assert expected(clean_db) == []  # nothing left crossing
    assert traded > 20  # the scenario does cross

    # A restart: another engine, a book rebuilt from the database, the same resting orders
    restarted: Any = SimpleNamespace(market_books=None)
    other = make_engine(db_url)
    try:
        assert matching_pass(other, restarted) == []
        assert resting(restarted) == resting(ctx)
        for _ in range(4):
            place_and_cancel(other, rng, owners, placed=10, cancelled=2)
            want = expected(other)
            assert sorted(matching_pass(other, restarted)) == sorted(want)
    finally:
        other.dispose()


def test_a_change_made_elsewhere_is_seen_and_a_failed_pass_rebuilds(clean_db: Engine) -> None:
    """A cancel from another process reaches the book through its change number; a pass whose commit
    fails leaves no fill behind in memory (the worker resets the book and the next pass finds it again)."""
    rng = random.Random(3)
    owners = users(clean_db, 4)
    ctx: Any = SimpleNamespace(market_books=None)
    place_and_cancel(clean_db, rng, owners, placed=30, cancelled=0)
    matching_pass(clean_db, ctx)
    with Session(clean_db) as s:
        victim = s.exec(
            select(Order).where(col(Order.status) == "open", col(Order.counterpart_id).is_(None))
        ).first()
        assert victim is not None
        victim.status, victim.open_wh = "cancelled", 0
        s.add(victim)
        s.commit()
        victim_id = victim.id
    matching_pass(clean_db, ctx)
    assert all(o.id != victim_id for orders in resting(ctx).values() for o in orders)

    place_and_cancel(clean_db, rng, owners, placed=20, cancelled=0)
    want = expected(clean_db)
    assert want
    with Session(clean_db) as s:
        engine.match_open_slots(ctx, s, lambda _slot: True)
        s.rollback()  # the commit never happens
    ctx.market_books.reset()  # what the worker does when a pass fails
    assert sorted(matching_pass(clean_db, ctx)) == sorted(want)


def _order(db: Engine, user: int, side: str, price_cents: int, qty: int = 500) -> str:
    now = datetime.now(UTC)
    with Session(db) as s:
        order = Order(
            id=uuid.uuid4().hex,
            user_id=user,
            side=side,
            slot_start=SLOTS[0],
            quantity_wh=qty,
            open_wh=qty,
            limit_price=price_cents * 10**16,
            status="open",
            seq=engine.next_seq(s),
            created_at=now,
            updated_at=now,
        )
        s.add(order)
        s.commit()
        return order.id


def test_a_pass_whose_changes_cross_nothing_takes_no_lock(clean_db: Engine) -> None:
    """Most wake-ups bring orders that rest: they reach the book without the counter's lock (SQLite: the
    database's write lock, which every placement waits for); a crossing order still takes it and fills."""
    from sqlalchemy import event

    seller, buyer = users(clean_db, 2)
    ctx: Any = SimpleNamespace(market_books=None)
    _order(clean_db, seller, "sell", 105)
    first_buy = _order(clean_db, buyer, "buy", 95)
    assert matching_pass(clean_db, ctx) == []  # builds the book
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(clean_db, "before_cursor_execute", seen)
    try:
        resting_buy, resting_sell = _order(clean_db, buyer, "buy", 99), _order(clean_db, seller, "sell", 100)
        with Session(clean_db) as s:
            cancelled = s.get(Order, first_buy)
            assert cancelled is not None
            cancelled.status, cancelled.open_wh = "cancelled", 0
            s.add(cancelled)
            s.commit()
        statements.clear()
        assert matching_pass(clean_db, ctx) == []
        assert not [q for q in statements if "UPDATE market_changes" in q], statements
        assert {o.id for o in resting(ctx)[SLOTS[0]] if o.side == Side.BUY} == {resting_buy}
        assert resting_sell in {o.id for o in resting(ctx)[SLOTS[0]]}
        statements.clear()
        assert matching_pass(clean_db, ctx) == []  # nothing changed: the counter read, no order read
        market = [q for q in statements if "market_changes" in q or "FROM orders" in q]
        assert len(market) == 1 and market[0].startswith("SELECT market_changes.last_no"), market

        crossing = _order(clean_db, buyer, "buy", 101, qty=300)
        want = expected(clean_db)
        assert [(f.buy_order_id, f.sell_order_id, f.quantity_wh) for f in want] == [
            (crossing, resting_sell, 300)
        ]
        statements.clear()
        assert matching_pass(clean_db, ctx) == want
        assert [q for q in statements if "UPDATE market_changes" in q]  # the fill was made under the lock
    finally:
        event.remove(clean_db, "before_cursor_execute", seen)
    restarted: Any = SimpleNamespace(market_books=None)
    assert matching_pass(clean_db, restarted) == []
    assert resting(restarted) == resting(ctx)
