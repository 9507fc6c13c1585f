"""Order placements through the API beside a deep book: `--book` open orders (default 50,000) seeded into
one slot, then sellers place sell orders from their sites and buyers with linked wallets place buy orders
and authorise each escrow by signature (create + sign typed data + authorize), while a reader polls
GET /market/book. One `essx run` (and its anvil) on this machine, the clients too.

    .venv/bin/python -m bench.bench_market_orders [--users 16] [--seconds 30] [--book 50000] [--postgres]

CPU per placement is the service's and anvil's process CPU (from /proc) over the placements made.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from sqlmodel import Session

from app.core.db import make_engine
from bench.bench_market_book import seed
from bench.service import concurrent_users_main, percentile, running_service
from ess_collector.models import SiteReading

PASSWORD = "bench-pass-1"
TICKS = os.sysconf("SC_CLK_TCK")


def service_cpu_seconds(data_dir: Path) -> float:
    """CPU of every process started for this data folder (essx, its workers, anvil)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if f"ESSX_DATA_DIR={data_dir}".encode() not in environ.split(b"\0"):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    return total / TICKS


def account(c: httpx.Client, admin: dict[str, str], role: str) -> dict[str, str]:
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    r = c.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": "u", "role": role},
    )
    assert r.status_code == 202, r.text
    tok = c.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD}).json()["access_token"]
    h = {"Authorization": f"Bearer {tok}"}
    me = c.get("/api/v1/users/me", headers=h).json()
    if me["status"] != "approved":
        r = c.post(f"/api/v1/admin/users/{me['id']}/approve", headers=admin)
        assert r.status_code == 200, r.text
    return h


def seller(c: httpx.Client, admin: dict[str, str], db_url: str, port: int) -> tuple[dict[str, str], int]:
    h = account(c, admin, "prosumer")
    assert c.post("/api/v1/wallets", json={"pin": "123456"}, headers=h).status_code == 201
    site = c.post(
        "/api/v1/sites",
        json={
            "name": "roof",
            "host": "127.0.0.1",
            "port": port,
            "pv_nameplate_w": 5000,
            "battery_capacity_wh": 10_000,
        },
        headers=h,
    )
    assert site.status_code == 201, site.text
    engine = make_engine(db_url)
    with Session(engine) as s:  # a fresh reading: 8 kWh above the reserve to sell
        s.add(
            SiteReading(
                site_id=site.json()["id"],
                ts=datetime.now().astimezone(),
                quality="ok",
                soc_tenths=900,
                accepted=True,
            )
        )
        s.commit()
    engine.dispose()
    return h, site.json()["id"]


def buyer(c: httpx.Client, admin: dict[str, str]) -> tuple[dict[str, str], Account]:
    h = account(c, admin, "consumer")
    acct = Account.create()
    msg = c.post("/api/v1/wallets/link/challenge", json={"address": acct.address}, headers=h).json()[
        "message"
    ]
    sig = acct.sign_message(encode_defunct(text=msg)).signature.hex()
    r = c.post(
        "/api/v1/wallets/link", json={"address": acct.address, "message": msg, "signature": sig}, headers=h
    )
    assert r.status_code == 201, r.text
    r = c.post(
        "/api/v1/admin/coin/mint",
        json={"to": acct.address, "amount": "1000000"},
        headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 200, r.text
    return h, acct


def run(users: int, seconds: float, book_orders: int) -> dict[str, object]:
    with running_service(1.0) as svc:
        db_url = svc.env.get("ESSX_DATABASE_URL") or f"sqlite:///{(svc.data_dir / 'essx.db').resolve()}"
        admin = {"Authorization": f"Bearer {svc.admin_token()}"}
        with httpx.Client(base_url=svc.base, timeout=60) as c:
            info = c.get("/api/v1/market").json()["next_slots"][2]
            slot, floor, ceiling = info["slot_start"], info["floor"], info["ceiling"]
            sellers = [seller(c, admin, db_url, 20000 + i) for i in range(users // 2)]
            buyers = [buyer(c, admin) for _ in range(users - users // 2)]
        engine = make_engine(db_url)
        seed(engine, datetime.fromisoformat(slot), book_orders, prefix=f"b{uuid.uuid4().hex[:6]}-")
        engine.dispose()
        with httpx.Client(base_url=svc.base, timeout=120) as c:  # the market worker builds its book
            c.get("/api/v1/market/book", params={"slot_start": slot})
        time.sleep(5)

        sells: list[float] = []
        buys: list[float] = []
        books: list[float] = []
        errors: list[str] = []
        stop_at = time.time() + seconds

        def sell_loop(h: dict[str, str], site_id: int) -> None:
            with httpx.Client(base_url=svc.base, headers=h, timeout=60) as cl:
                while time.time() < stop_at:
                    t0 = time.perf_counter()
                    r = cl.post(
                        "/api/v1/orders",
                        json={
                            "side": "sell",
                            "slot_start": slot,
                            "quantity_wh": 5,
                            "limit_price": ceiling,
                            "site_id": site_id,
                        },
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                    if r.status_code != 201:
                        errors.append(r.text[:200])
                        continue
                    sells.append(time.perf_counter() - t0)

        def buy_loop(h: dict[str, str], acct: Account) -> None:
            with httpx.Client(base_url=svc.base, headers=h, timeout=60) as cl:
                while time.time() < stop_at:
                    t0 = time.perf_counter()
                    r = cl.post(
                        "/api/v1/orders",
                        json={"side": "buy", "slot_start": slot, "quantity_wh": 5, "limit_price": floor},
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                    if r.status_code != 201:
                        errors.append(r.text[:200])
                        continue
                    typed = r.json()["challenge"]["typed_data"]
                    sig = acct.sign_message(encode_typed_data(full_message=typed)).signature.hex()
                    r = cl.post(f"/api/v1/orders/{r.json()['id']}/authorize", json={"signature": sig})
                    if r.status_code != 200:
                        errors.append(r.text[:200])
                        continue
                    buys.append(time.perf_counter() - t0)

        def book_loop() -> None:
            with httpx.Client(base_url=svc.base, timeout=60) as cl:
                while time.time() < stop_at:
                    t0 = time.perf_counter()
                    r = cl.get("/api/v1/market/book", params={"slot_start": slot})
                    if r.status_code == 200:
                        books.append(time.perf_counter() - t0)
                    time.sleep(0.2)

        threads = [threading.Thread(target=sell_loop, args=a) for a in sellers]
        threads += [threading.Thread(target=buy_loop, args=a) for a in buyers]
        threads.append(threading.Thread(target=book_loop))
        cpu0, client0, begin = service_cpu_seconds(svc.data_dir), time.process_time(), time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - begin
        service_cpu = service_cpu_seconds(svc.data_dir) - cpu0
        client_cpu = time.process_time() - client0
    placed = len(sells) + len(buys)
    return {
        "bench": "market_order_placements",
        "book_orders": book_orders,
        "users": users,
        "seconds": round(elapsed, 1),
        "placed_per_s": round(placed / elapsed, 1),
        "sells_per_s": round(len(sells) / elapsed, 1),
        "buys_per_s": round(len(buys) / elapsed, 1),
        "sell_p50_ms": round(percentile(sells, 50) * 1000) if sells else None,
        "sell_p99_ms": round(percentile(sells, 99) * 1000) if sells else None,
        "buy_p50_ms": round(percentile(buys, 50) * 1000) if buys else None,
        "buy_p99_ms": round(percentile(buys, 99) * 1000) if buys else None,
        "book_p50_ms": round(percentile(books, 50) * 1000, 1) if books else None,
        "book_p99_ms": round(percentile(books, 99) * 1000, 1) if books else None,
        "service_cpu_ms_per_placement": round(service_cpu / placed * 1000, 1) if placed else None,
        "client_cpu_ms_per_placement": round(client_cpu / placed * 1000, 1) if placed else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def main() -> None:
    concurrent_users_main(lambda a: run(a.users, a.seconds, int(a.book)), book=50_000)


if __name__ == "__main__":
    main()
