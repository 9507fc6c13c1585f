"""Turn per-order allocations of a uniform-price auction into fills, never pairing an owner with itself.

Who trades how much is decided before (rationing in `auction`); this only chooses which buy
is recorded against which sell. Precondition, guaranteed by the rationing: every owner's allocated buy
plus sell volume is at most the total volume Q, which is exactly when a self-trade-free pairing exists.
"""

from __future__ import annotations

from app.market.matching.types import Fill, Order


def pair_allocations(
    buys: list[Order], b_alloc: list[int], sells: list[Order], s_alloc: list[int], price: int
) -> list[Fill]:
    """Greedy in priority order: each buy takes the first sells with volume left, skipping its own owner's.

    `b_alloc`/`s_alloc` cover a prefix of `buys`/`sells` (the orders after it get nothing).
    """
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
