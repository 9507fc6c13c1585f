"""Slow, obviously-correct models of the matching rules, to check the fast engines against."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from app.market.matching.types import Fill, Order, Side


class NaiveContinuousBook:
    """Continuous pay-as-bid as the rules read: scan every resting order, sort, take in order."""

    def __init__(self) -> None:
        self.resting: list[Order] = []

    def submit(self, order: Order) -> list[Fill]:
        if order.side is Side.BUY:
            candidates = [
                r
                for r in self.resting
                if r.side is Side.SELL and r.limit_price <= order.limit_price and r.owner != order.owner
            ]
            candidates.sort(key=lambda r: (r.limit_price, r.seq))
        else:
            candidates = [
                r
                for r in self.resting
                if r.side is Side.BUY and r.limit_price >= order.limit_price and r.owner != order.owner
            ]
            candidates.sort(key=lambda r: (-r.limit_price, r.seq))
        left = order.quantity_wh
        fills: list[Fill] = []
        for r in candidates:
            if not left:
                break
            take = min(left, r.quantity_wh)
            if order.side is Side.BUY:
                fills.append(Fill(order.id, r.id, take, order.limit_price))
            else:
                fills.append(Fill(r.id, order.id, take, r.limit_price))
            left -= take
            i = self.resting.index(r)
            if take == r.quantity_wh:
                del self.resting[i]
            else:
                self.resting[i] = replace(r, quantity_wh=r.quantity_wh - take)
        if left:
            self.resting.append(replace(order, quantity_wh=left))
        return fills

    def cancel(self, order_id: str) -> int:
        for i, r in enumerate(self.resting):
            if r.id == order_id:
                del self.resting[i]
                return r.quantity_wh
        return 0


def curve_volume(orders: list[Order], price: int) -> int:
    demand = sum(o.quantity_wh for o in orders if o.side is Side.BUY and o.limit_price >= price)
    supply = sum(o.quantity_wh for o in orders if o.side is Side.SELL and o.limit_price <= price)
    return min(demand, supply)


def brute_force_price(orders: list[Order]) -> int | None:
    """Try every integer price: the midpoint of the volume-maximising ones, rounded down."""
    top = max((o.limit_price for o in orders), default=0)
    volumes = {p: curve_volume(orders, p) for p in range(1, top + 2)}
    best = max(volumes.values(), default=0)
    if best == 0:
        return None
    winners = [p for p, v in volumes.items() if v == best]
    return (min(winners) + max(winners)) // 2


def max_flow_volume(buys: list[Order], sells: list[Order]) -> int:
    """Largest volume buys and sells can trade with no same-owner pair (Edmonds-Karp)."""
    n = len(buys) + len(sells) + 2
    source, sink = 0, n - 1
    cap = [[0] * n for _ in range(n)]
    for i, b in enumerate(buys, start=1):
        cap[source][i] = b.quantity_wh
        for j, s in enumerate(sells, start=1 + len(buys)):
            if b.owner != s.owner:
                cap[i][j] = b.quantity_wh
    for j, s in enumerate(sells, start=1 + len(buys)):
        cap[j][sink] = s.quantity_wh
    flow = 0
    while True:
        parent = [-1] * n
        parent[source] = source
        queue = deque([source])
        while queue and parent[sink] < 0:
            u = queue.popleft()
            for v in range(n):
                if cap[u][v] > 0 and parent[v] < 0:
                    parent[v] = u
                    queue.append(v)
        if parent[sink] < 0:
            return flow
        push = None
        v = sink
        while v != source:
            u = parent[v]
            push = cap[u][v] if push is None else min(push, cap[u][v])
            v = u
        assert push is not None
        v = sink
        while v != source:
            u = parent[v]
            cap[u][v] -= push
            cap[v][u] += push
            v = u
        flow += push


def filled_by_order(fills: list[Fill]) -> dict[str, int]:
    filled: dict[str, int] = {}
    for f in fills:
        filled[f.buy_order_id] = filled.get(f.buy_order_id, 0) + f.quantity_wh
        filled[f.sell_order_id] = filled.get(f.sell_order_id, 0) + f.quantity_wh
    return filled
