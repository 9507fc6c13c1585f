"""Uniform-price call auction (pay-as-clear) at gate closure.

Rules, in order:
1. Price discovery on the anonymous curves. Demand D(p) is the open Wh of buys with limit >= p, supply
   S(p) the open Wh of sells with limit <= p. The clearing price maximises the curve volume
   min(D(p), S(p)); the prices that do form an integer range [lo, hi] (lo is always a sell limit, hi
   a buy limit) and the price is its midpoint rounded down, (lo + hi) // 2: the k = 1/2 double auction,
   which splits the surplus of the marginal orders evenly between the two sides.
2. Eligible orders: buys with limit >= price, sells with limit <= price. Every fill trades at the price.
3. Self-trade exclusion changes allocation, never the price (the price stays anonymous). The volume is
   the largest an owner-respecting pairing allows: Q = min(D, S, min over owners of (D - d_o + S - s_o))
   where d_o, s_o are the owner's eligible buy and sell Wh: the last term only binds when one owner holds
   so much of both sides that the others cannot absorb it.
4. Rationing by price, then time (seq) priority: each side is filled in priority order until Q is
   reached. An owner's buys are capped at the sells of *other* owners (S - s_o), and its sells at the
   buys allocated to other owners, so no allocation forces a self-trade; the capped volume goes to the
   next orders in priority.
5. Pairing: buys in priority order take sells in priority order, skipping sells of the same owner. If
   that greedy pass strands one owner's buy and sell (its last counterparties were taken), fills
   between two other owners are rewired through it: X-Y becomes X-owner's sell and owner's buy-Y.
   Who trades how much was fixed in step 4; pairing only decides what is recorded on chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from app.market.matching import (
    AuctionResult,
    BookLevels,
    Fill,
    GateClosure,
    MatchingError,
    Order,
    Side,
    aggregate_levels,
    parse_snapshot,
    snapshot_state,
)


class _Bucketed:
    """A slot's orders grouped by side and price, with each level's total Wh.

    One pass in the caller's order and no comparison sort of the orders: at a million orders every
    extra pass over them costs a noticeable fraction of a second.
    """

    __slots__ = ("ask_qty", "asks", "bid_qty", "bids")

    def __init__(self, orders: Iterable[Order]) -> None:
        self.bids: dict[int, list[Order]] = {}  # price -> orders in seq (time) order
        self.asks: dict[int, list[Order]] = {}
        self.bid_qty: dict[int, int] = {}
        self.ask_qty: dict[int, int] = {}
        last_seq = -1
        in_seq_order = True
        for o in orders:
            price = o.limit_price
            if o.side is Side.BUY:
                levels, totals = self.bids, self.bid_qty
            else:
                levels, totals = self.asks, self.ask_qty
            level = levels.get(price)
            if level is None:
                levels[price] = [o]
                totals[price] = o.quantity_wh
            else:
                level.append(o)
                totals[price] += o.quantity_wh
            if o.seq <= last_seq:
                in_seq_order = False
            last_seq = o.seq
        if not in_seq_order:  # books and the database hand orders over in seq order; others pay a sort
            for level in (*self.bids.values(), *self.asks.values()):
                level.sort(key=lambda o: o.seq)

    def curves(self) -> tuple[list[int], list[int], list[int]]:
        """Candidate prices (every limit, ascending) with demand D(p) and supply S(p) at each."""
        prices = sorted(self.bid_qty.keys() | self.ask_qty.keys())
        dem = [0] * len(prices)
        sup = [0] * len(prices)
        acc = 0
        for i in range(len(prices) - 1, -1, -1):
            acc += self.bid_qty.get(prices[i], 0)
            dem[i] = acc
        acc = 0
        for i, p in enumerate(prices):
            acc += self.ask_qty.get(p, 0)
            sup[i] = acc
        return prices, dem, sup

    def price(self) -> int | None:
        prices, dem, sup = self.curves()
        volumes = [d if d < s else s for d, s in zip(dem, sup, strict=True)]
        best = max(volumes, default=0)
        if best == 0:
            return None
        lo = volumes.index(best)
        hi = len(volumes) - 1 - volumes[::-1].index(best)
        return (prices[lo] + prices[hi]) // 2


def clearing_price(orders: Iterable[Order]) -> int | None:
    """Midpoint (rounded down) of the prices that maximise min(D, S); None when the curves never cross."""
    return _Bucketed(orders).price()


def _ration(orders: list[Order], total: int, caps: dict[str, int]) -> list[int]:
    """Allocate `total` Wh over `orders` (in priority order) under per-owner caps.

    Returns allocations for a prefix of `orders`; the rest get nothing. `caps` holds only the owners
    whose cap can bind (usually none), so the common case is a plain running sum.
    """
    alloc: list[int] = []
    left = total
    for o in orders:
        if not left:
            break
        q = o.quantity_wh if o.quantity_wh < left else left
        if caps:
            cap = caps.get(o.owner)
            if cap is not None:
                if q > cap:
                    q = cap
                caps[o.owner] = cap - q
        alloc.append(q)
        left -= q
    if left:
        raise AssertionError("rationing could not place the whole volume")  # excluded by the Q formula
    return alloc


_order_id = attrgetter("id")


def _owner_totals(orders: list[Order]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for o in orders:
        totals[o.owner] = totals.get(o.owner, 0) + o.quantity_wh
    return totals


def _pair(
    buys: list[Order], b_alloc: list[int], sells: list[Order], s_alloc: list[int], price: int
) -> list[Fill]:
    fills: list[Fill] = []
    s_left = list(s_alloc)  # allocations cover a prefix of `sells`
    n_sells = len(s_left)
    head = 0  # first sell that may still have volume
    stranded_buys: list[tuple[Order, int]] = []
    for buy, need in zip(buys, b_alloc, strict=False):
        if not need:
            continue
        while head < n_sells and not s_left[head]:
            head += 1
        k = head
        while need and k < n_sells:
            avail = s_left[k]
            sell = sells[k]
            if not avail or sell.owner == buy.owner:
                k += 1
                continue
            take = avail if avail < need else need
            fills.append(Fill(buy.id, sell.id, take, price))
            need -= take
            s_left[k] = avail - take
        if need:
            stranded_buys.append((buy, need))
    if stranded_buys:
        stranded_sells = [(s, q) for s, q in zip(sells, s_left, strict=False) if q]
        fills = _rewire(fills, stranded_buys, stranded_sells, buys, sells, price)
    return fills


def _rewire(
    fills: list[Fill],
    stranded_buys: list[tuple[Order, int]],
    stranded_sells: list[tuple[Order, int]],
    buys: list[Order],
    sells: list[Order],
    price: int,
) -> list[Fill]:
    """Route one owner's stranded buy and sell volume through fills between two other owners.

    The greedy pass only strands volume of a single owner m, equally on both sides (r Wh each). The
    paired Q - r Wh include d_m + s_m - 2r Wh with m, so fills without m carry Q - d_m - s_m + r >= r Wh
    (rationing kept d_m + s_m <= Q): always enough to rewire. Lowest-priority fills are rewired first.
    """
    owner = {o.id: o.owner for o in buys}
    owner.update((o.id, o.owner) for o in sells)
    m = stranded_buys[0][0].owner
    bi = si = 0
    b_need, s_need = stranded_buys[0][1], stranded_sells[0][1]
    extra: list[Fill] = []
    idx = len(fills) - 1
    while bi < len(stranded_buys):
        if idx < 0:
            raise AssertionError("no fill left to rewire through")  # excluded by the volume argument
        f = fills[idx]
        if owner[f.buy_order_id] == m or owner[f.sell_order_id] == m or not f.quantity_wh:
            idx -= 1
            continue
        d = min(f.quantity_wh, b_need, s_need)
        fills[idx] = Fill(f.buy_order_id, f.sell_order_id, f.quantity_wh - d, price)
        extra.append(Fill(f.buy_order_id, stranded_sells[si][0].id, d, price))
        extra.append(Fill(stranded_buys[bi][0].id, f.sell_order_id, d, price))
        b_need -= d
        s_need -= d
        if not b_need:
            bi += 1
            b_need = stranded_buys[bi][1] if bi < len(stranded_buys) else 0
        if not s_need:
            si += 1
            s_need = stranded_sells[si][1] if si < len(stranded_sells) else 0
    merged: dict[tuple[str, str], int] = {}
    for f in fills + extra:
        if f.quantity_wh:
            key = (f.buy_order_id, f.sell_order_id)
            merged[key] = merged.get(key, 0) + f.quantity_wh
    return [Fill(b, s, q, price) for (b, s), q in merged.items()]


def clear_call_auction(orders: Iterable[Order], *, check_ids: bool = True) -> AuctionResult:
    """Clear one slot's orders at a single price (see the module docstring for every rule).

    Order ids must be unique; `check_ids=False` skips the check for callers that already guarantee
    it (a book keyed by id), which saves a hash of every id.
    """
    if not isinstance(orders, list):
        orders = list(orders)
    if check_ids and len(set(map(_order_id, orders))) != len(orders):
        raise MatchingError("duplicate order ids in the auction")
    book = _Bucketed(orders)
    price = book.price()
    if price is None:
        return AuctionResult(None, [])
    # Eligible orders in priority order: levels best price first, each level already in seq order.
    buys = [o for p in sorted(book.bids, reverse=True) if p >= price for o in book.bids[p]]
    sells = [o for p in sorted(book.asks) if p <= price for o in book.asks[p]]
    buy_by_owner = _owner_totals(buys)
    sell_by_owner = _owner_totals(sells)
    demand = sum(buy_by_owner.values())
    supply = sum(sell_by_owner.values())
    both = buy_by_owner.keys() & sell_by_owner.keys()
    volume = min(demand, supply, *(demand + supply - buy_by_owner[o] - sell_by_owner[o] for o in both))
    if not volume:
        return AuctionResult(None, [])
    # An owner's buys may only take other owners' sells; keep only the caps that can bind.
    buy_caps = {o: supply - sell_by_owner[o] for o in both if buy_by_owner[o] > supply - sell_by_owner[o]}
    b_alloc = _ration(buys, volume, buy_caps)
    bought: dict[str, int] = {}
    for o, q in zip(buys, b_alloc, strict=False):
        if o.owner in both:
            bought[o.owner] = bought.get(o.owner, 0) + q
    sell_caps = {o: volume - bought.get(o, 0) for o in both if sell_by_owner[o] > volume - bought.get(o, 0)}
    s_alloc = _ration(sells, volume, sell_caps)
    return AuctionResult(price, _pair(buys, b_alloc, sells, s_alloc, price))


class CallAuctionBook:
    """Collects a slot's orders and clears them once, at gate closure (the `Mechanism` protocol)."""

    name: str = "pay_as_clear"

    def __init__(self) -> None:
        self._orders: dict[str, Order] = {}
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

    def submit(self, order: Order) -> list[Fill]:
        if self._closed:
            raise MatchingError("the book is closed (gate closure passed)")
        if order.seq <= self._last_seq:
            raise MatchingError(f"seq {order.seq} is not after the last accepted seq {self._last_seq}")
        if order.id in self._orders:
            raise MatchingError(f"order {order.id!r} is already in the book")
        self._last_seq = order.seq
        self._orders[order.id] = order
        return []

    def cancel(self, order_id: str) -> int:
        order = self._orders.pop(order_id, None)
        return 0 if order is None else order.quantity_wh

    def open_orders(self) -> list[Order]:
        return list(self._orders.values())

    def levels(self, depth: int | None = None) -> BookLevels:
        return aggregate_levels(self._orders.values(), depth)

    def close(self) -> GateClosure:
        if self._closed:
            return GateClosure(price=None, fills=[], expired=[])
        result = clear_call_auction(list(self._orders.values()), check_ids=False)
        filled: dict[str, int] = {}
        for f in result.fills:
            filled[f.buy_order_id] = filled.get(f.buy_order_id, 0) + f.quantity_wh
            filled[f.sell_order_id] = filled.get(f.sell_order_id, 0) + f.quantity_wh
        expired = []
        for o in self._orders.values():
            left = o.quantity_wh - filled.get(o.id, 0)
            if left:
                expired.append(Order(o.id, o.owner, o.side, left, o.limit_price, o.seq))
        self._orders.clear()
        self._closed = True
        return GateClosure(price=result.price, fills=result.fills, expired=expired)

    def snapshot(self) -> dict[str, Any]:
        return snapshot_state(self.name, self.open_orders(), self._last_seq, self._closed)

    @classmethod
    def restore(cls, state: dict[str, Any]) -> CallAuctionBook:
        orders, last_seq, closed = parse_snapshot(cls.name, state)
        book = cls.from_orders(orders, last_seq=last_seq)
        book._closed = closed
        return book

    @classmethod
    def from_orders(cls, orders: Iterable[Order], last_seq: int | None = None) -> CallAuctionBook:
        book = cls()
        for order in sorted(orders, key=lambda o: o.seq):
            book.submit(order)
        if last_seq is not None:
            if last_seq < book._last_seq:
                raise MatchingError("last_seq is below an open order's seq")
            book._last_seq = last_seq
        return book
