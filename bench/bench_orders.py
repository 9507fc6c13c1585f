"""Order placements through the API: N concurrent users each placing buy orders (create + authorize with
PIN, escrow relayed gas-free), anvil with 1-second blocks.

    .venv/bin/python -m bench.bench_orders [--users 50] [--seconds 30]
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from bench.bench_transfers import PIN, make_users
from bench.service import ServiceCpu, concurrent_users_main, percentile, running_service


def next_slot(minutes: int = 15) -> str:
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % minutes)
    return (start + timedelta(minutes=3 * minutes)).isoformat()


def run(users: int, seconds: float) -> dict[str, object]:
    with running_service(1.0) as svc:
        admin = {"Authorization": f"Bearer {svc.admin_token()}"}
        coin = httpx.get(f"{svc.base}/api/v1/coin").json()
        people, _ = make_users(svc.base, admin, users, "pin", ServiceCpu(svc.data_dir), coin)
        headers = [u.headers for u in people]
        slot = next_slot()
        latencies: list[float] = []
        errors: list[str] = []
        stop_at = time.time() + seconds

        def worker(h: dict[str, str]) -> None:
            with httpx.Client(base_url=svc.base, headers=h, timeout=60) as c:
                while time.time() < stop_at:
                    t0 = time.perf_counter()
                    r = c.post(
                        "/api/v1/orders",
                        json={"side": "buy", "slot_start": slot, "quantity_wh": 100, "limit_price": "200"},
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                    if r.status_code != 201:
                        errors.append(r.text[:200])
                        continue
                    r = c.post(f"/api/v1/orders/{r.json()['id']}/authorize", json={"pin": PIN})
                    if r.status_code != 200:
                        errors.append(r.text[:200])
                        continue
                    latencies.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=worker, args=(h,)) for h in headers]
        begin = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - begin
    return {
        "bench": "order_placements",
        "users": users,
        "seconds": round(elapsed, 1),
        "placed": len(latencies),
        "placed_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000) if latencies else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def main() -> None:
    concurrent_users_main(lambda a: run(a.users, a.seconds))


if __name__ == "__main__":
    main()
