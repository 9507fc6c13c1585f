"""Continuous pay-as-bid matching for one slot: price-time priority, partial fills, no self-trades.

An incoming order trades at once against the resting opposite side, best price first and, within a
price, lowest seq first, as long as both limits allow. Every fill is priced at the *buy* order's limit
(pay-as-bid, as Grid Singularity's pay-as-bid market): a resting bid hit by a seller trades at the bid,
an incoming bid that lifts asks pays its own bid on each fill. Resting orders of the incoming order's
owner are skipped, never cancelled, so an owner's bid and ask may both rest across each other.

Layout, stdlib only: per side a list of level keys sorted ascending with the *best* level last (bids
keyed by price, asks by -price), so taking and removing the best level is `list.pop()`; a dict maps a
price to its level; a level is a FIFO deque. Cancelled or filled orders are only marked dead (qty 0)
and leave the deque lazily, which keeps cancel O(1) apart from removing an emptied level.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable
from typing import Any

from app.market.matching.types import (
    BookLevels,
    Fill,
    GateClosure,
    MatchingError,
    Order,
    Side,
    parse_snapshot,
    snapshot_state,
)


class _Resting:
    __slots__ = ("id", "is_buy", "owner", "price", "qty", "seq")

    def __init__(self, order: Order) -> None:
        self.id = order.id
        self.owner = order.owner
        self.is_buy = order.side is Side.BUY
        self.price = order.limit_price
        self.qty = order.quantity_wh
        self.seq = order.seq

    def to_order(self) -> Order:
        side = Side.BUY if self.is_buy else Side.SELL
        return Order(self.id, self.owner, side, self.qty, self.price, self.seq)


class _Level:
    __slots__ = ("live", "qty", "queue")

    def __init__(self) -> None:
        self.queue: deque[_Resting] = deque()
        self.live = 0  # orders in the queue with qty > 0
        self.qty = 0  # their total open Wh, for the public book

    def compact(self) -> None:
        # Dead entries behind a long-lived head would otherwise pile up under heavy cancelling.
        if len(self.queue) > 2 * self.live + 16:
            self.queue = deque(r for r in self.queue if r.qty)


class _BookSide:
    __slots__ = ("keys", "levels", "sign")

    def __init__(self, is_buy: bool) -> None:
        self.sign = 1 if is_buy else -1
        self.keys: list[int] = []  # sign * price, ascending: best level last
        self.levels: dict[int, _Level] = {}

    def add(self, resting: _Resting) -> None:
        level = self.levels.get(resting.price)
        if level is None:
            level = self.levels[resting.price] = _Level()
            insort(self.keys, self.sign * resting.price)
        level.queue.append(resting)
        level.live += 1
        level.qty += resting.qty

    def drop_level(self, price: int) -> None:
        key = self.sign * price
        i = bisect_left(self.keys, key)
        del self.keys[i]
        del self.levels[price]

    def depth(self, depth: int | None) -> list[tuple[int, int]]:
        keys = self.keys if depth is None else self.keys[-depth:] if depth > 0 else []
        return [(abs(k), self.levels[abs(k)].qty) for k in reversed(keys)]


class ContinuousBook:
    """Pay-as-bid continuous double auction for one slot (see the module docstring for the rules)."""

    name: str = "pay_as_bid"

    def __init__(self) -> None:
        self._bids = _BookSide(is_buy=True)
        self._asks = _BookSide(is_buy=False)
        self._orders: dict[str, _Resting] = {}  # open orders, insertion (= seq) order
        self._last_seq = -1
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def __len__(self) -> int:
        return len(self._orders)

    def _accept(self, order: Order) -> None:
        if self._closed:
            raise MatchingError("the book is closed (gate closure passed)")
        if order.seq <= self._last_seq:
            raise MatchingError(f"seq {order.seq} is not after the last accepted seq {self._last_seq}")
        if order.id in self._orders:
            raise MatchingError(f"order {order.id!r} is already in the book")
        self._last_seq = order.seq

    def submit(self, order: Order) -> list[Fill]:
        self._accept(order)
        fills: list[Fill] = []
        if order.side is Side.BUY:
            left = self._take(self._asks, order, fills)
        else:
            left = self._take(self._bids, order, fills)
        if left:
            resting = _Resting(order)
            resting.qty = left
            (self._bids if resting.is_buy else self._asks).add(resting)
            self._orders[resting.id] = resting
        return fills

    def _take(self, book: _BookSide, order: Order, fills: list[Fill]) -> int:
        """Match `order` against the opposite `book`; return its unmatched quantity."""
        left = order.quantity_wh
        limit = order.limit_price
        owner = order.owner
        incoming_buy = book.sign < 0
        keys = book.keys
        levels = book.levels
        orders = self._orders
        i = len(keys) - 1
        while left and i >= 0:
            price = keys[i] * book.sign
            if (price > limit) if incoming_buy else (price < limit):
                break
            level = levels[price]
            fill_price = limit if incoming_buy else price  # pay-as-bid: the buy limit
            queue = level.queue
            for resting in queue:
                qty = resting.qty
                if not qty or resting.owner == owner:
                    continue  # dead entry, or a self-trade: skip, the resting order stays
                take = qty if qty < left else left
                if incoming_buy:
                    fills.append(Fill(order.id, resting.id, take, fill_price))
                else:
                    fills.append(Fill(resting.id, order.id, take, fill_price))
                resting.qty = qty - take
                level.qty -= take
                left -= take
                if take == qty:
                    level.live -= 1
                    del orders[resting.id]
                if not left:
                    break
            while queue and not queue[0].qty:
                queue.popleft()
            if not level.live:
                del keys[i]
                del levels[price]
            else:
                level.compact()
            i -= 1
        return left

    def cancel(self, order_id: str) -> int:
        resting = self._orders.pop(order_id, None)
        if resting is None:
            return 0
        book = self._bids if resting.is_buy else self._asks
        level = book.levels[resting.price]
        qty = resting.qty
        resting.qty = 0
        level.live -= 1
        level.qty -= qty
        if not level.live:
            book.drop_level(resting.price)
        else:
            level.compact()
        return qty

    def open_orders(self) -> list[Order]:
        return [r.to_order() for r in self._orders.values()]

    def open_quantity(self, order_id: str) -> int:
        """The order's open Wh in the book, 0 when it is not (or no longer) there."""
        resting = self._orders.get(order_id)
        return resting.qty if resting is not None else 0

    def levels(self, depth: int | None = None) -> BookLevels:
        return {"bids": self._bids.depth(depth), "asks": self._asks.depth(depth)}

    def best_bid(self) -> int | None:
        return self._bids.keys[-1] if self._bids.keys else None

    def best_ask(self) -> int | None:
        return -self._asks.keys[-1] if self._asks.keys else None

    def close(self) -> GateClosure:
        """Gate closure: continuous matching already happened, so everything still open expires."""
        expired = [] if self._closed else self.open_orders()
        self._closed = True
        for order in expired:
            self.cancel(order.id)
        return GateClosure(price=None, fills=[], expired=expired)

    def snapshot(self) -> dict[str, Any]:
        return snapshot_state(self.name, self.open_orders(), self._last_seq, self._closed)

    @classmethod
    def restore(cls, state: dict[str, Any]) -> ContinuousBook:
        orders, last_seq, closed = parse_snapshot(cls.name, state)
        book = cls.from_orders(orders, last_seq=last_seq)
        book._closed = closed
        return book

    @classmethod
    def from_orders(cls, orders: Iterable[Order], last_seq: int | None = None) -> ContinuousBook:
        """Rebuild the resting book from persisted open orders, without matching them again.

        Open orders never cross except an owner's own bid and ask, which must keep resting, so
        re-submitting them would be wrong. `last_seq` (the highest seq ever accepted, including
        orders since filled) keeps the seq check identical to the book before the restart.
        """
        book = cls()
        for order in sorted(orders, key=lambda o: o.seq):
            if order.id in book._orders or order.seq <= book._last_seq:
                raise MatchingError(f"duplicate order id or seq at {order.id!r}")
            resting = _Resting(order)
            (book._bids if resting.is_buy else book._asks).add(resting)
            book._orders[resting.id] = resting
            book._last_seq = order.seq
        if last_seq is not None:
            if last_seq < book._last_seq:
                raise MatchingError("last_seq is below an open order's seq")
            book._last_seq = last_seq
        return book
