"""Matching engine throughput, in process: continuous pay-as-bid orders/s and call-auction clearing time,
then the uniform-price auction side by side with the PyPI package `pymarket` where it can run.

.venv/bin/python -m bench.bench_matching [--quick] [--repeat 3] [--json-only]

Prints a table, then one JSON object per line. `pymarket` is not a project dependency: install it by
hand (`.venv/bin/pip install pymarket`) to get the comparison; without it the rows say so.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.market.matching.auction import clear_call_auction
from app.market.matching.continuous import ContinuousBook
from app.market.matching.types import Order, Side

COIN = 10**18  # base units per coin: prices are realistic 18-decimal integers


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "bench": "machine",
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "loadavg_1m": os.getloadavg()[0],  # the numbers below mean little on a busy machine
    }


def random_orders(n: int, seed: int, owners: int = 1000, unique_prices: bool = False) -> list[Order]:
    """A slot's book: prices around 165 coin/kWh (sd 15), 0.1-5 kWh, `owners` households on both sides.

    `unique_prices` gives every order its own price (still integers) for mechanisms that cannot handle
    ties (pymarket's Huang and MUDA).
    """
    rng = random.Random(seed)
    orders = []
    for i in range(n):
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        coins = max(1, round(rng.gauss(165, 15)))
        price = coins * 1_000_000 + i if unique_prices else coins * COIN
        orders.append(Order(f"o{i}", f"u{rng.randrange(owners)}", side, rng.randint(100, 5000), price, i))
    return orders


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times = []
    result = None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def bench_continuous(n: int, repeat: int) -> dict[str, Any]:
    orders = random_orders(n, seed=1)

    def run() -> tuple[int, int]:
        book = ContinuousBook()
        fills = 0
        for order in orders:
            fills += len(book.submit(order))
        return fills, len(book)

    times, (fills, resting) = timed(run, repeat)
    return {
        "bench": "continuous_pay_as_bid",
        "orders": n,
        "fills": fills,
        "resting_after": resting,
        "best_orders_per_s": round(n / min(times)),
        "median_orders_per_s": round(n / statistics.median(times)),
    }


def bench_auction(n: int, repeat: int) -> dict[str, Any]:
    orders = random_orders(n, seed=2)
    times, result = timed(lambda: clear_call_auction(orders), repeat)
    return {
        "bench": "call_auction_pay_as_clear",
        "orders": n,
        "fills": len(result.fills),
        "volume_wh": result.volume_wh,
        "price": result.price,
        "best_s": round(min(times), 3),
        "median_s": round(statistics.median(times), 3),
    }


def to_pymarket(orders: list[Order]) -> Any:
    """The same orders as a pymarket bid table; owners renumbered 0..k-1 (MUDA indexes fees by user)."""
    import pymarket as pm

    owners: dict[str, int] = {}
    bids = pm.BidManager()
    for o in orders:
        user = owners.setdefault(o.owner, len(owners))
        bids.add_bid(float(o.quantity_wh), float(o.limit_price), user, o.side is Side.BUY, o.seq)
    return bids.get_df()


def pymarket_rows(n: int, tied: bool) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"bench": "pymarket_compare", "orders": n, "book": "tied" if tied else "unique"}
    try:
        import numpy as np
        import pymarket as pm
        from pymarket.mechanisms.huang_auction import huang_auction
    except Exception as exc:  # not installed, or broken against the installed numpy/pandas
        return [{**base, "mechanism": "pymarket", "error": f"cannot import pymarket: {exc!r}"}]
    orders = random_orders(n, seed=3, unique_prices=not tied)
    ours_times, ours = timed(lambda: clear_call_auction(orders), 1)
    rows = [
        {
            **base,
            "mechanism": "essx uniform price (pay-as-clear)",
            "s": round(ours_times[0], 4),
            "volume_wh": ours.volume_wh,
            "price": ours.price,
        }
    ]
    book = ContinuousBook()
    start = time.perf_counter()
    continuous_fills = [f for o in orders for f in book.submit(o)]
    rows.append(
        {
            **base,
            "mechanism": "essx continuous (pay-as-bid)",
            "s": round(time.perf_counter() - start, 4),
            "volume_wh": sum(f.quantity_wh for f in continuous_fills),
            "price": "each buyer's bid",
        }
    )
    df = to_pymarket(orders)

    def volume(trans: Any) -> int:
        t = trans.get_df()
        buying = set(df.index[df["buying"]])
        return round(sum(float(q) for b, q in zip(t["bid"], t["quantity"], strict=True) if b in buying))

    runs: list[tuple[str, Callable[[], Any]]] = [
        # Market.run("huang") dies in pymarket's clean-up under pandas >= 3 (read-only array); the
        # mechanism function itself still runs.
        ("pymarket Huang (trade reduction)", lambda: huang_auction(df)),
        ("pymarket MUDA", lambda: pm.mechanisms.MudaAuction(df, r=np.random.RandomState(1)).run()),
    ]
    if n <= 200:  # P2P enumerates all buyer x seller pairs in a (bids x pairs) matrix
        runs.append(
            ("pymarket P2P random", lambda: pm.mechanisms.P2PTrading(df, r=np.random.RandomState(1)).run())
        )
    for name, fn in runs:
        row: dict[str, Any] = {**base, "mechanism": name}
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trans, extra = fn()
            row["s"] = round(time.perf_counter() - start, 4)
            row["volume_wh"] = volume(trans)
            prices = {k: float(v) for k, v in extra.items() if k.startswith("price")}
            row["price"] = prices or None
        except Exception as exc:
            row["s"] = round(time.perf_counter() - start, 4)
            hint = (
                " (MUDA refuses two bids of one user at one price)"
                if type(exc) is NotImplementedError
                else ""
            )
            row["error"] = f"{type(exc).__name__}: {exc}{hint}"[:120]
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        if r["bench"] == "machine":
            lines.append(
                f"machine: {r['nproc']} CPUs, {r['cpu']}, Python {r['python']}, load {r['loadavg_1m']}"
            )
        elif r["bench"] == "continuous_pay_as_bid":
            lines.append(
                f"continuous pay-as-bid  {r['orders']:>9,} orders  {r['best_orders_per_s']:>9,} orders/s best"
                f"  ({r['median_orders_per_s']:,} median)  {r['fills']:,} fills"
            )
        elif r["bench"] == "call_auction_pay_as_clear":
            lines.append(
                f"call auction clear     {r['orders']:>9,} orders  {r['best_s']:>9.3f} s best"
                f"  ({r['median_s']:.3f} median)  {r['fills']:,} fills, {r['volume_wh']:,} Wh"
            )
        else:
            outcome = (
                r.get("error") or f"{r['s']:.3f} s  {r.get('volume_wh', 0):>10,} Wh  price {r.get('price')}"
            )
            lines.append(f"  {r['book']:<6} {r['orders']:>6,}  {r['mechanism']:<36} {outcome}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1M auction and pymarket at 10k")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = [machine()]
    rows.append(bench_continuous(100_000, args.repeat))
    for n in (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000):
        rows.append(bench_auction(n, args.repeat if n < 1_000_000 else 1))
    rows += pymarket_rows(1000, tied=True)
    for n in (100, 1000) if args.quick else (100, 1000, 10_000):
        rows += pymarket_rows(n, tied=False)
    rows.append({**machine(), "bench": "machine_after"})
    if not args.json_only:
        print(table([r for r in rows if r["bench"] != "machine_after"]))
        print()
    for r in rows:
        print(json.dumps(r, default=str))


if __name__ == "__main__":
    main()
