"""End-to-end custodial transfers: API call to mined, with N concurrent users on 1-second blocks.

    .venv/bin/python -m bench.bench_transfers [--users 50] [--seconds 30] [--block-time 1]

Each user loops: POST /transfers, POST /transfers/{id}/authorize {pin}. Latency is measured from the
first API call to the `mined` step the service records; throughput counts transfers confirmed per second
of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from datetime import datetime

import httpx
from eth_account import Account

from bench.service import machine, percentile, postgres_database, running_service

PIN = "123456"


def make_users(base: str, admin: dict[str, str], n: int) -> list[dict[str, str]]:
    users = []
    with httpx.Client(base_url=base, timeout=60) as c:
        for i in range(n):
            email = f"u{i}-{uuid.uuid4().hex[:6]}@example.com"
            c.post(
                "/api/v1/auth/register",
                json={"email": email, "password": "bench-pass-1", "display_name": "u", "role": "consumer"},
            )
            tok = c.post("/api/v1/auth/token", data={"username": email, "password": "bench-pass-1"}).json()[
                "access_token"
            ]
            h = {"Authorization": f"Bearer {tok}"}
            addr = c.post("/api/v1/wallets", json={"pin": PIN}, headers=h).json()["address"]
            r = c.post(
                "/api/v1/admin/coin/mint",
                json={"to": addr, "amount": "1000000"},
                headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert r.status_code == 200, r.text
            users.append(h)
    return users


def run(users: int, seconds: float, block_time: float) -> dict[str, object]:
    with running_service(block_time) as svc:
        admin = {"Authorization": f"Bearer {svc.admin_token()}"}
        headers = make_users(svc.base, admin, users)
        sink = Account.create().address
        started: dict[str, float] = {}
        errors: list[str] = []
        stop_at = time.time() + seconds

        def worker(h: dict[str, str]) -> None:
            with httpx.Client(base_url=svc.base, headers=h, timeout=60) as c:
                while time.time() < stop_at:
                    t0 = time.time()
                    r = c.post(
                        "/api/v1/transfers",
                        json={"to": sink, "amount": "0.001"},
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                    if r.status_code != 201:
                        errors.append(r.text[:200])
                        continue
                    tid = r.json()["id"]
                    r = c.post(f"/api/v1/transfers/{tid}/authorize", json={"pin": PIN})
                    if r.status_code != 200:
                        errors.append(r.text[:200])
                        continue
                    started[tid] = t0

        threads = [threading.Thread(target=worker, args=(h,)) for h in headers]
        begin = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submitted_in = time.time() - begin
        # let the last batches be mined, then read every transfer's recorded steps
        time.sleep(max(3.0, 3 * block_time))
        latencies, confirmed, failed = [], 0, 0
        with httpx.Client(base_url=svc.base, timeout=60) as c:
            for h in headers:
                items = c.get("/api/v1/transfers?direction=out&limit=500", headers=h).json()["items"]
                for t in items:
                    if t["id"] not in started:
                        continue
                    if t["status"] == "confirmed":
                        confirmed += 1
                        mined = next(s for s in t["steps"] if s["kind"] == "mined")
                        latencies.append(datetime.fromisoformat(mined["at"]).timestamp() - started[t["id"]])
                    elif t["status"] == "failed":
                        failed += 1
    return {
        "bench": "custodial_transfers",
        "users": users,
        "block_time_s": block_time,
        "seconds": round(submitted_in, 1),
        "authorized": len(started),
        "confirmed": confirmed,
        "failed": failed,
        "errors": len(errors),
        "confirmed_per_s": round(confirmed / submitted_in, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000) if latencies else None,
        "first_error": errors[0] if errors else None,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--block-time", type=float, default=1.0)
    p.add_argument(
        "--postgres", action="store_true", help="run the service on a throw-away PostgreSQL database"
    )
    a = p.parse_args()
    print(json.dumps({"machine": machine()}))
    if a.postgres:
        with postgres_database() as url:
            os.environ["ESSX_DATABASE_URL"] = url
            main_run(a)
        return
    main_run(a)


def main_run(a: argparse.Namespace) -> None:
    result = run(a.users, a.seconds, a.block_time)
    result["database"] = "postgresql" if os.environ.get("ESSX_DATABASE_URL") else "sqlite"
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
