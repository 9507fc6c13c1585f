"""End-to-end custodial transfers: API call to mined, with N concurrent users on 1-second blocks.

    .venv/bin/python -m bench.bench_transfers [--users 50] [--seconds 30] [--block-time 1] [--workers 2]
        [--postgres]

Each user loops: POST /transfers, POST /transfers/{id}/authorize {pin}. Latency is measured from the
first API call to the `mined` step the service records; throughput counts transfers confirmed per second
of the run.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime

import httpx
from eth_account import Account

from bench.service import concurrent_users_main, percentile, running_service

PIN = "123456"
# (from, to) step pairs: "start" is the client's first call; the rest are the service's recorded steps
GAPS = {
    "create_request": ("start", "requested"),  # queueing + handling until the transfer row exists
    "to_authorized": ("requested", "authorized"),  # rest of create, the round trip, authorize incl. Argon2
    "batching": ("authorized", "submitted"),  # waiting for the batcher's next relay transaction
    "to_mined": ("submitted", "mined"),  # broadcast, the next block, the relayer reading the receipt
}


def make_users(base: str, admin: dict[str, str], n: int) -> list[dict[str, str]]:
    users = []
    with httpx.Client(base_url=base, timeout=60) as c:
        for i in range(n):
            email = f"u{i}-{uuid.uuid4().hex[:6]}@example.com"
            r = c.post(
                "/api/v1/auth/register",
                json={"email": email, "password": "bench-pass-1", "display_name": "u", "role": "consumer"},
            )
            assert r.status_code == 202, r.text
            r = c.post("/api/v1/auth/token", data={"username": email, "password": "bench-pass-1"})
            assert r.status_code == 200, r.text
            tok = r.json()["access_token"]
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


def argon2_ms() -> float:
    """CPU time of one PIN verification here and now: this machine's speed varies from run to run."""
    from app.core.security import hash_secret, verify_secret

    hashed = hash_secret(PIN)
    start = time.process_time()
    for _ in range(10):
        verify_secret(hashed, PIN)
    return round((time.process_time() - start) * 100, 1)


def run(users: int, seconds: float, block_time: float) -> dict[str, object]:
    calibration = argon2_ms()
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
        gaps: dict[str, list[float]] = {name: [] for name in GAPS}
        with httpx.Client(base_url=svc.base, timeout=60) as c:
            for h in headers:
                items = c.get("/api/v1/transfers?direction=out&limit=500", headers=h).json()["items"]
                for t in items:
                    if t["id"] not in started:
                        continue
                    if t["status"] == "confirmed":
                        confirmed += 1
                        at = {s["kind"]: datetime.fromisoformat(s["at"]).timestamp() for s in t["steps"]}
                        at["start"] = started[t["id"]]
                        latencies.append(at["mined"] - at["start"])
                        for name, (a, b) in GAPS.items():
                            gaps[name].append(at[b] - at[a])
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
        "argon2_cpu_ms": calibration,
        # where a transfer's latency goes (medians, ms), from the steps the service recorded
        "p50_gaps_ms": {name: round(percentile(v, 50) * 1000) for name, v in gaps.items() if v},
    }


def main() -> None:
    concurrent_users_main(lambda a: run(a.users, a.seconds, a.block_time), block_time=1.0)


if __name__ == "__main__":
    main()
