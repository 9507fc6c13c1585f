"""Order placements beside a deep book: `--book` open orders (default 50,000) seeded into one slot, then,
one mode after the other in the same service, while a reader polls GET /market/book:

- `sell`: `--users` prosumers loop sell orders from their sites (`POST /orders`);
- `signature`: `--users` consumers with linked wallets loop buy orders and authorise each escrow by
  signature (`POST /orders`, sign the typed data, `POST /orders/{id}/authorize`);
- `profile`: `--profiles` consumers with custodial wallets enable a trading profile (PIN, once); the
  automatic trader then places their buy orders (4 slots each), its escrow signed under the profile's
  authorisation. Measured from the first to the last order its passes place after every profile is on.

One `essx run` (and its anvil) on this machine, the clients too.

    .venv/bin/python -m bench.bench_market_orders [--users 16] [--seconds 30] [--book 50000] \
        [--profiles 100] [--modes sell,signature,profile] [--postgres] [--workers 2]

CPU per placement is the service's and anvil's process CPU (from /proc) over the placements made; "net of
idle" subtracts what the service used per second before the first placement (its loops, the chain node,
the book reader), which otherwise grows per placement as throughput drops on a busy machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from sqlmodel import Session, col, select

from app.core.db import make_engine
from app.trading.models import AgentOrder
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


def service_pids(data_dir: Path) -> list[int]:
    """The service's Python processes (not the chain node)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"ESSX_DATA_DIR={data_dir}".encode() in environ.split(b"\0") and b"python" in cmdline:
            pids.append(int(pid))
    return pids


def start_profiler(data_dir: Path, mode: str, seconds: float) -> subprocess.Popen[bytes] | None:
    """With ESSX_BENCH_PYSPY=<folder>: py-spy (installed beside this Python) samples the service while a
    mode runs, as collapsed stacks in <folder>/<mode>-<pid>.txt (for `flamegraph.pl` or a grep)."""
    folder = os.environ.get("ESSX_BENCH_PYSPY")
    if not folder:
        return None
    pid = max(service_pids(data_dir))  # the newest: the API worker under `essx run`
    out = Path(folder) / f"{mode}-{pid}.txt"
    spy = Path(sys.executable).parent / "py-spy"
    # --gil: only the thread holding the GIL, i.e. where the Python CPU goes (a thread waiting for the
    # database or the chain is left out); 50 a second keeps up on a busy machine (200 fell behind)
    args = [str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50", "--gil"]
    return subprocess.Popen([*args, "--format", "raw", "--nonblocking", "-o", str(out)])


def account(c: httpx.Client, admin: dict[str, str], role: str) -> dict[str, str]:
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    r = c.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": "u", "role": role},
    )
    assert r.status_code == 202, r.text
    r = c.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    tok = r.json()["access_token"]
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
        "/api/v1/wallets/link",
        json={"address": acct.address, "message": msg, "signature": sig},
        headers=h,
    )
    assert r.status_code == 201, r.text
    r = c.post(
        "/api/v1/admin/coin/mint",
        json={"to": acct.address, "amount": "1000000"},
        headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 200, r.text
    return h, acct


def custodial_buyer(c: httpx.Client, admin: dict[str, str]) -> dict[str, str]:
    h = account(c, admin, "consumer")
    r = c.post("/api/v1/wallets", json={"pin": "123456"}, headers=h)
    assert r.status_code == 201, r.text
    r = c.post(
        "/api/v1/admin/coin/mint",
        json={"to": r.json()["address"], "amount": "1000000"},
        headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 200, r.text
    return h


class CpuTimeline:
    """The service's CPU sampled every 0.1 s, to read what a window between two timestamps cost."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), service_cpu_seconds(self.data_dir)))
            self._stop.wait(0.1)

    def __enter__(self) -> CpuTimeline:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> float:
        before = [s for s in self.samples if s[0] <= t] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= t] or self.samples[-1:]
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)


def _loop_result(
    mode: str, done: list[float], errors: list[str], elapsed: float, service_cpu: float, client_cpu: float
) -> dict[str, object]:
    n = len(done)
    return {
        "placed_per_s": round(n / elapsed, 1),
        "placed": n,
        "p50_ms": round(percentile(done, 50) * 1000) if done else None,
        "p99_ms": round(percentile(done, 99) * 1000) if done else None,
        "service_cpu_ms_per_placement": round(service_cpu / n * 1000, 1) if n else None,
        "client_cpu_ms_per_placement": round(client_cpu / n * 1000, 1) if n else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "load": round(os.getloadavg()[0], 2),
        "seconds": round(elapsed, 1),
        "mode": mode,
    }


def run(users: int, seconds: float, book_orders: int, profiles: int, mode: str) -> dict[str, object]:
    modes = ("sell", "signature", "profile") if mode == "all" else (mode,)
    with running_service(1.0) as svc:
        db_url = svc.env.get("ESSX_DATABASE_URL") or f"sqlite:///{(svc.data_dir / 'essx.db').resolve()}"
        admin = {"Authorization": f"Bearer {svc.admin_token()}"}
        with httpx.Client(base_url=svc.base, timeout=60) as c:
            info = c.get("/api/v1/market").json()["next_slots"]
            slot, floor, ceiling = info[2]["slot_start"], info[2]["floor"], info[2]["ceiling"]
            sellers = [seller(c, admin, db_url, 20000 + i) for i in range(users)] if "sell" in modes else []
            buyers = [buyer(c, admin) for _ in range(users)] if "signature" in modes else []
            holders = [custodial_buyer(c, admin) for _ in range(profiles)] if "profile" in modes else []
        engine = make_engine(db_url)
        seed(engine, datetime.fromisoformat(slot), book_orders, prefix=f"b{uuid.uuid4().hex[:6]}-")
        engine.dispose()
        with httpx.Client(base_url=svc.base, timeout=120) as c:  # the market worker builds its book
            c.get("/api/v1/market/book", params={"slot_start": slot})
        time.sleep(5)

        books: list[float] = []
        stop_reader = threading.Event()

        def book_loop() -> None:
            with httpx.Client(base_url=svc.base, timeout=60) as cl:
                while not stop_reader.is_set():
                    t0 = time.perf_counter()
                    r = cl.get("/api/v1/market/book", params={"slot_start": slot})
                    if r.status_code == 200:
                        books.append(time.perf_counter() - t0)
                    stop_reader.wait(0.2)

        def sell_loop(
            h: dict[str, str], site_id: int, stop_at: float, done: list[float], errors: list[str]
        ) -> None:
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
                    done.append(time.perf_counter() - t0)

        def buy_loop(
            h: dict[str, str], acct: Account, stop_at: float, done: list[float], errors: list[str]
        ) -> None:
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
                    done.append(time.perf_counter() - t0)

        def timed_loops(name: str, target: Any, args: list[tuple[Any, ...]]) -> dict[str, object]:
            done: list[float] = []
            errors: list[str] = []
            stop_at = time.time() + seconds
            threads = [threading.Thread(target=target, args=(*a, stop_at, done, errors)) for a in args]
            spy = start_profiler(svc.data_dir, name, seconds)
            cpu0, client0, begin = service_cpu_seconds(svc.data_dir), time.process_time(), time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if spy is not None:
                spy.wait()
            elapsed = time.time() - begin
            service_cpu = service_cpu_seconds(svc.data_dir) - cpu0
            return _loop_result(name, done, errors, elapsed, service_cpu, time.process_time() - client0)

        def profile_pass() -> dict[str, object]:
            """Enable every profile (PIN, once), then time the agent's passes that follow."""
            body = {
                "enabled": True,
                "expected_use_wh": 20,
                "max_wh_per_slot": 100,
                "buy_ceiling": info[0]["floor"],  # at the floor: no trade, so no chain traffic in the window
                "daily_limit": "1000",
                "pin": "123456",
            }
            errors: list[str] = []
            spy = start_profiler(svc.data_dir, "profile", seconds)
            with CpuTimeline(svc.data_dir) as cpu, httpx.Client(base_url=svc.base, timeout=60) as cl:
                for h in holders:
                    r = cl.put("/api/v1/trading/profile", json=body, headers=h)
                    if r.status_code != 200:
                        errors.append(r.text[:200])
                enabled_at = datetime.now(UTC)
                want = 4 * (len(holders) - len(errors))
                engine = make_engine(db_url)
                deadline = time.time() + 120
                placed: list[datetime] = []
                while time.time() < deadline:
                    with Session(engine) as s:
                        placed = sorted(
                            s.exec(select(AgentOrder.placed_at).where(col(AgentOrder.side) == "buy")).all()
                        )
                    if len(placed) >= want:
                        break
                    time.sleep(1)
                time.sleep(0.5)
                engine.dispose()
            if spy is not None:
                spy.wait()
            times = [p.astimezone(UTC).timestamp() for p in placed if p.astimezone(UTC) > enabled_at]
            n = len(times)
            if n < 2:
                return {"mode": "profile", "placed": n, "errors": len(errors), "first_error": errors[:1]}
            elapsed = times[-1] - times[0]
            service_cpu = cpu.at(times[-1]) - cpu.at(times[0])
            result = _loop_result("profile", [], errors, elapsed, service_cpu, 0.0)
            result.update(placed=n, placed_before_all_enabled=len(placed) - n, p50_ms=None, p99_ms=None)
            result["placed_per_s"] = round((n - 1) / elapsed, 1)
            result["service_cpu_ms_per_placement"] = round(service_cpu / (n - 1) * 1000, 1)
            result.pop("client_cpu_ms_per_placement")
            return result

        reader = threading.Thread(target=book_loop)
        reader.start()
        results: dict[str, object] = {}
        try:
            # what the service burns with nobody placing (its loops, the chain node, the book reader): on a
            # loaded machine throughput varies, and this share of "CPU per placement" varies with it
            cpu0, t0 = service_cpu_seconds(svc.data_dir), time.time()
            time.sleep(10)
            idle_rate = (service_cpu_seconds(svc.data_dir) - cpu0) / (time.time() - t0)
            results["idle_cpu_ms_per_s"] = round(idle_rate * 1000, 1)
            if "sell" in modes:
                results["sell"] = timed_loops("sell", sell_loop, sellers)
            if "signature" in modes:
                results["signature"] = timed_loops("signature", buy_loop, buyers)
            if "profile" in modes:
                results["profile"] = profile_pass()
            for name in modes:
                r = results[name]
                assert isinstance(r, dict)
                if r.get("service_cpu_ms_per_placement") is not None and r.get("placed_per_s"):
                    net = r["service_cpu_ms_per_placement"] - idle_rate * 1000 / r["placed_per_s"]
                    r["service_cpu_ms_per_placement_net_of_idle"] = round(net, 1)
        finally:
            stop_reader.set()
            reader.join()
    return {
        "bench": "market_order_placements",
        "book_orders": book_orders,
        "users": users,
        "profiles": profiles,
        "modes": results,
        "book_p50_ms": round(percentile(books, 50) * 1000, 1) if books else None,
        "book_p99_ms": round(percentile(books, 99) * 1000, 1) if books else None,
    }


def main() -> None:
    concurrent_users_main(
        lambda a: run(a.users, a.seconds, int(a.book), int(a.profiles), a.mode),
        choices={"mode": ("all", "sell", "signature", "profile")},
        book=50_000,
        profiles=100,
    )


if __name__ == "__main__":
    main()
