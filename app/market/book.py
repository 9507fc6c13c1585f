"""Each open slot's continuous book, kept in memory by the market worker (the background lease holder).

The book is built once from the database by replaying the open orders in seq order (what the matcher
did on every pass before), then kept current from the orders changed since: every insert or update of
an order is stamped with a number from the `market_changes` counter, taken under that row's lock, so
numbers are committed in order and reading `change_no > last seen` misses nothing, whichever process
wrote (an API worker's placement or cancel, a previous lease holder's matcher). A new order is
submitted to its slot's book as it arrives, so a pass costs what changed, not the whole book.

A pass that fills takes the counter's lock before it reads: no order changes while it matches, so the
fills it computes from memory still hold when it writes them. Most passes fill nothing (the worker wakes
for every placement, and most orders rest): a pass first reads the counter and the changed orders without
the lock, and applies them at once when they cross nothing (no write, so no lock: on SQLite the counter's
lock is the database's write lock, which every placement waits for). When a pass fails, its caller drops
the books (`reset`): they may hold fills that were never committed, and the next pass rebuilds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from app.market.matching.continuous import ContinuousBook
from app.market.matching.types import Fill, Side
from app.market.matching.types import Order as MatchOrder
from app.market.models import MarketChange, Order, OrderSide, OrderStatus, next_change

_COLUMNS = (
    col(Order.id),
    col(Order.user_id),
    col(Order.side),
    col(Order.slot_start),
    col(Order.open_wh),
    col(Order.limit_price),
    col(Order.status),
    col(Order.counterpart_id),
    col(Order.seq),
)
_COUNTER = select(col(MarketChange.last_no)).where(col(MarketChange.id) == 1)  # read, not locked


@dataclass(slots=True)
class _Direct:
    """An open direct offer (it names its counterpart): matched only against the one naming it back."""

    id: str
    user_id: int
    counterpart_id: int
    side: str
    open_wh: int
    price: int
    seq: int


class LiveBooks:
    def __init__(self) -> None:
        self._books: dict[datetime, ContinuousBook] = {}
        self._direct: dict[datetime, dict[str, _Direct]] = {}
        self._dirty: set[datetime] = set()  # slots with a direct offer not yet tried
        self._seen: int | None = None  # the change number the books reflect; None: not built

    def reset(self) -> None:
        self._books.clear()
        self._direct.clear()
        self._dirty.clear()
        self._seen = None

    def match(self, session: Session, is_open: Callable[[datetime], bool]) -> list[Fill]:
        """Catch up with the orders changed since the last pass and return the fills they cause.

        `is_open(slot_start)`: the slot's gate has not closed. A pass that returns fills holds the
        counter's lock from its read to the caller's commit; one that returns none took no lock and wrote
        nothing (`_quiet_pass`).
        """
        if self._quiet_pass(session, is_open):
            return []
        current = next_change(session.connection(), 0)
        fills: list[Fill] = []
        if self._seen is None or current < self._seen:  # not built, or the database was replaced
            self.reset()
            fills += self._replay(self._open_rows(session), is_open)
        elif current > self._seen:
            changed = select(*_COLUMNS).where(col(Order.change_no) > self._seen)
            rows = list(session.connection().execute(changed).all())
            fills += self._apply(session, rows, is_open)
        self._seen = current
        self._drop_closed(is_open)
        for slot in sorted(self._dirty):
            fills += self._match_direct(slot)
        self._dirty.clear()
        return fills

    def _quiet_pass(self, session: Session, is_open: Callable[[datetime], bool]) -> bool:
        """The pass without the counter's lock, when what changed fills nothing: True if done.

        Numbers are committed in the order given (`MarketChange`), so once the counter reads n, every
        change numbered up to n is committed, and the read of the orders changed since the last pass
        that follows sees them all (and perhaps later ones, which the next pass reads again: applying a
        row twice changes nothing). A change that may fill (an order crossing the other side's best
        price, counting the other arrivals), a direct offer, or an order filled elsewhere goes to the
        locked pass, which reads them again under the lock; so does a book not built yet."""
        if self._seen is None or self._dirty:
            return False
        conn = session.connection()
        current = conn.execute(_COUNTER).scalar()
        if current is None or current < self._seen:  # the database was replaced: the locked pass rebuilds
            return False
        if current > self._seen:
            rows = list(conn.execute(select(*_COLUMNS).where(col(Order.change_no) > self._seen)).all())
            quiet = self._quiet_changes(rows, is_open)
            if quiet is None:
                return False
            cancels, arrived = quiet
            for book, order_id in cancels:
                book.cancel(order_id)
            if self._replay(arrived, is_open):  # never, by `_quiet_changes`: start over under the lock
                self.reset()
                return False
            self._seen = current
        self._drop_closed(is_open)
        return True

    def _quiet_changes(
        self, rows: list[Any], is_open: Callable[[datetime], bool]
    ) -> tuple[list[tuple[ContinuousBook, str]], list[Any]] | None:
        """The changes as (cancels, arrivals) when applying them can fill nothing and rebuilds no slot;
        None otherwise. Conservative: a crossing price is enough (the book may still not fill it)."""
        cancels: list[tuple[ContinuousBook, str]] = []
        arrived: list[Any] = []
        bids: dict[datetime, int] = {}  # the highest arriving buy per slot, the lowest arriving sell
        asks: dict[datetime, int] = {}
        for row in rows:
            live = row.status == OrderStatus.open
            if row.counterpart_id is not None:
                if live or row.id in self._direct.get(row.slot_start, {}):
                    return None
                continue
            book = self._books.get(row.slot_start)
            held = book.open_quantity(row.id) if book is not None else 0
            if held and not live:
                assert book is not None
                cancels.append((book, row.id))
            elif held and held != row.open_wh:
                return None  # filled elsewhere: the locked pass rebuilds that slot
            elif live and not held and is_open(row.slot_start):
                arrived.append(row)
                slot, price = row.slot_start, int(row.limit_price)
                if row.side == OrderSide.buy:
                    bids[slot] = max(bids.get(slot, price), price)
                else:
                    asks[slot] = min(asks.get(slot, price), price)
        for slot in bids.keys() | asks.keys():
            book = self._books.get(slot)
            best_bid, best_ask = (book.best_bid(), book.best_ask()) if book is not None else (None, None)
            bid = max((p for p in (bids.get(slot), best_bid) if p is not None), default=None)
            ask = min((p for p in (asks.get(slot), best_ask) if p is not None), default=None)
            if bid is not None and ask is not None and bid >= ask:
                return None
        return cancels, arrived

    def _drop_closed(self, is_open: Callable[[datetime], bool]) -> None:
        for slot in [s for s in self._books if not is_open(s)]:
            del self._books[slot]
        for slot in [s for s in self._direct if not is_open(s)]:
            del self._direct[slot]

    def _open_rows(self, session: Session, slot_start: datetime | None = None) -> list[Any]:
        q = select(*_COLUMNS).where(col(Order.status) == OrderStatus.open)
        if slot_start is not None:
            q = q.where(col(Order.slot_start) == slot_start)
        return list(session.connection().execute(q).all())

    def _replay(self, rows: Iterable[Any], is_open: Callable[[datetime], bool]) -> list[Fill]:
        """Submit open orders in arrival order, ties (seq given by two processes before the counter) by id."""
        fills: list[Fill] = []
        for row in sorted(rows, key=lambda r: (r.seq or 0, r.id)):
            if not is_open(row.slot_start):
                continue  # gate closure expires it
            if row.counterpart_id is not None:
                self._add_direct(row)
                continue
            book = self._books.setdefault(row.slot_start, ContinuousBook())
            fills += book.submit(
                MatchOrder(
                    row.id, str(row.user_id), Side(row.side), row.open_wh, row.limit_price, row.seq or 0
                )
            )
        return fills

    def _apply(self, session: Session, rows: list[Any], is_open: Callable[[datetime], bool]) -> list[Fill]:
        arrived, stale = [], set()
        for row in rows:
            live = row.status == OrderStatus.open
            if row.counterpart_id is not None:
                offers = self._direct.get(row.slot_start, {})
                known = offers.get(row.id)
                if not live:
                    offers.pop(row.id, None)
                elif known is None or known.open_wh != row.open_wh:
                    arrived.append(row)
                continue
            book = self._books.get(row.slot_start)
            held = book.open_quantity(row.id) if book is not None else 0
            if held and not live:
                assert book is not None
                book.cancel(row.id)
            elif held and held != row.open_wh:
                stale.add(row.slot_start)  # filled elsewhere (another lease holder): rebuild that slot
            elif live and not held:
                arrived.append(row)
        fills: list[Fill] = []
        for slot in stale:
            self._books.pop(slot, None)
            self._direct.pop(slot, None)
            fills += self._replay(self._open_rows(session, slot), is_open)
        fills += self._replay((r for r in arrived if r.slot_start not in stale), is_open)
        return fills

    def _add_direct(self, row: Any) -> None:
        self._direct.setdefault(row.slot_start, {})[row.id] = _Direct(
            row.id, row.user_id, row.counterpart_id, row.side, row.open_wh, row.limit_price, row.seq or 0
        )
        self._dirty.add(row.slot_start)

    def _match_direct(self, slot_start: datetime) -> list[Fill]:
        """A direct offer matches only the counterpart's order that names it back, at the seller's price.

        Pairs that crossed were filled until one side was used up, so a slot needs trying again only
        when a direct offer arrived or changed.
        """
        offers = self._direct.get(slot_start, {})
        ordered = sorted(offers.values(), key=lambda o: o.seq)
        sells = {(o.user_id, o.counterpart_id): o for o in ordered if o.side == OrderSide.sell}
        fills = []
        for buy in (o for o in ordered if o.side == OrderSide.buy):
            sell = sells.get((buy.counterpart_id, buy.user_id))
            if sell is None or buy.price < sell.price:
                continue
            q = min(buy.open_wh, sell.open_wh)
            if q > 0:
                buy.open_wh -= q
                sell.open_wh -= q
                fills.append(Fill(buy.id, sell.id, q, sell.price))
        for o in [o for o in ordered if not o.open_wh]:
            del offers[o.id]
        return fills
