"""The market's matcher pass and public book at 5k/20k/50k open orders in one slot, seeded straight into
the database (SQLite file or a throw-away PostgreSQL database), in process: wall time and process CPU.

    .venv/bin/python -m bench.bench_market_book [--sizes 5000,20000,50000] [--postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import Session, SQLModel, select

from app.core.config import Settings
from app.core.db import make_engine
from app.market import engine as market_engine
from app.market import service
from app.market.models import Order, next_change
from app.users.models import User
from bench.service import machine, percentile, postgres_database

COIN = 10**18
USERS = 1000


def now() -> datetime:
    return datetime.now(UTC)


def slot_ahead() -> datetime:
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 15)
    return start + timedelta(hours=2)


def seed(engine: Any, slot: datetime, n: int, prefix: str = "u") -> None:
    """`n` open orders that do not cross (bids 100-149 coins/kWh, asks 150-199) from 1000 households."""
    rng = random.Random(n)
    now = datetime.now(UTC)
    with Session(engine) as s:
        s.execute(
            insert(User),
            [
                {
                    "email": f"{prefix}{i}@bench.test",
                    "password_hash": "x",
                    "display_name": f"u{i}",
                    "role": "prosumer",
                    "status": "approved",
                    "created_at": now,
                }
                for i in range(USERS)
            ],
        )
        ids = [u for u in s.exec(select(User.id)) if u is not None]
        # numbers from the change counter, as the API gives them: the market worker's book sees these orders
        base = next_change(s.connection(), n) - n
        rows = []
        for i in range(n):
            sell = i % 2 == 1
            price = (rng.randrange(150, 200) if sell else rng.randrange(100, 150)) * COIN
            q = rng.randint(100, 5000)
            rows.append(
                order_row(rng.choice(ids), "sell" if sell else "buy", slot, q, price, base + i + 1, now)
            )
        for k in range(0, n, 5000):
            s.execute(insert(Order), rows[k : k + 5000])
        s.commit()
    if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load: fresh statistics
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE orders"))


def order_row(user_id: int, side: str, slot: datetime, q: int, price: int, seq: int, now: datetime) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "user_id": user_id,
        "side": side,
        "slot_start": slot,
        "quantity_wh": q,
        "open_wh": q,
        "limit_price": price,
        "status": "open",
        "seq": seq,
        "change_no": seq,
        "escrow_amount": 0,
        "created_at": now,
        "updated_at": now,
    }


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {
        "p50_ms": round(percentile(walls, 50) * 1000, 1),
        "p99_ms": round(percentile(walls, 99) * 1000, 1),
        "cpu_ms": round(sum(cpus) / len(cpus) * 1000, 1),
    }


@contextmanager
def database(postgres: bool) -> Iterator[str]:
    if postgres:
        with postgres_database() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="essx-bench-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"


def run(n: int, postgres: bool, passes: int, books: int) -> dict[str, object]:
    with database(postgres) as url:
        engine = make_engine(url)
        SQLModel.metadata.create_all(engine)
        slot = slot_ahead()
        seed(engine, slot, n)
        ctx: Any = SimpleNamespace(settings=Settings(), market_books=None)

        rng = random.Random(7)

        def match_pass() -> None:
            with Session(engine) as s:
                market_engine.match_open_slots(ctx, s, lambda _slot: True)
                s.commit()

        def place(k: int) -> None:
            """`k` new orders since the last pass, a third of them crossing the book."""
            with Session(engine) as s:
                users = [u for u in s.exec(select(User.id).limit(50)) if u is not None]
                for _ in range(k):
                    side = rng.choice(("buy", "sell"))
                    coins = rng.randrange(100, 200)
                    row = order_row(
                        rng.choice(users), side, slot, rng.randint(100, 5000), coins * COIN, 0, now()
                    )
                    row["seq"] = market_engine.next_seq(s)
                    s.add(Order(**row))
                s.commit()

        def incremental() -> None:
            place(20)
            w, c = time.perf_counter(), time.process_time()
            match_pass()
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)

        def book() -> None:
            with Session(engine) as s:
                service.book(ctx, s, slot)

        build = timed(match_pass, 1)  # the first pass builds the book from the database (a restart)
        walls: list[float] = []
        cpus: list[float] = []
        for _ in range(passes):
            incremental()
        result = {
            "orders": n,
            "build_pass": build,
            "pass_after_20_new_orders": {
                "p50_ms": round(percentile(walls, 50) * 1000, 1),
                "p99_ms": round(percentile(walls, 99) * 1000, 1),
                "cpu_ms": round(sum(cpus) / len(cpus) * 1000, 1),
            },
            "book": timed(book, books),
        }
        engine.dispose()
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="5000,20000,50000")
    p.add_argument("--postgres", action="store_true")
    p.add_argument("--passes", type=int, default=20)
    p.add_argument("--books", type=int, default=100)
    a = p.parse_args()
    print(json.dumps({"machine": machine()}))
    for n in (int(x) for x in a.sizes.split(",")):
        load = os.getloadavg()[0]
        r = run(n, a.postgres, a.passes, a.books)
        r.update(database="postgresql" if a.postgres else "sqlite", load_before=round(load, 2))
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
