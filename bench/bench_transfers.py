"""End-to-end transfers: API call to mined, with N concurrent users on 1-second blocks.

    .venv/bin/python -m bench.bench_transfers [--users 50] [--seconds 30] [--block-time 1] [--workers 2]
        [--postgres] [--mode pin|signature]

Each user loops: POST /transfers, POST /transfers/{id}/authorize, with its PIN (custodial wallets, the
default) or with an EIP-712 signature of the returned typed data (`--mode signature`: linked wallets,
signed here as a mobile wallet would). Latency is measured from the first API call to the `mined` step the
service records; throughput counts transfers confirmed per second of the run.

Beside throughput it prints the service's CPU time per operation (its processes' user + system time,
without the chain node): per confirmed transfer (both requests and its share of the relayed batch), per
mint, per `GET /coin` and per login (Argon2id). Throughput swings with the machine's other load; CPU per
operation much less.

`ESSX_BENCH_PROFILE=out.txt` records the service's process with py-spy (installed beside this Python)
during the transfers only, as collapsed stacks (`-f raw`), for finding where a transfer's CPU goes;
`ESSX_BENCH_PROFILE_ARGS` adds py-spy options (`--gil`: only the thread holding the GIL, Python's own
work; without it every thread py-spy sees as running is sampled, also one inside SQLite or waiting for a
core, which on a loaded machine is not the same as CPU time).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct

from bench.service import ServiceCpu, concurrent_users_main, percentile, running_service
from wallet.signer import LocalSigner

PIN = "123456"
PASSWORD = "bench-pass-1"
# (from, to) step pairs: "start" is the client's first call; the rest are the service's recorded steps
GAPS = {
    "create_request": ("start", "requested"),  # queueing + handling until the transfer row exists
    "to_authorized": ("requested", "authorized"),  # rest of create, the round trip, authorize
    "batching": ("authorized", "submitted"),  # waiting for the batcher's next relay transaction
    "to_mined": ("submitted", "mined"),  # broadcast, the next block, the relayer reading the receipt
}


class BenchUser:
    def __init__(self, email: str) -> None:
        self.email = email
        self.headers: dict[str, str] = {}
        self.address = ""
        self.signer: LocalSigner | None = None  # a linked wallet's key, held by the "phone"


def cpu_per(cpu: ServiceCpu, count: int, work: Callable[[], None]) -> float:
    """Milliseconds of service CPU per operation while `work` does `count` of them."""
    before = cpu.seconds()
    work()
    return round((cpu.seconds() - before) * 1000 / count, 2)


def in_parallel(items: list[Any], fn: Callable[[Any], None], threads: int = 10) -> None:
    chunks = [items[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=lambda c=c: [fn(x) for x in c]) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def make_users(
    base: str, admin: dict[str, str], n: int, mode: str, cpu: ServiceCpu, coin: dict[str, Any]
) -> tuple[list[BenchUser], dict[str, float]]:
    users = [BenchUser(f"u{i}-{uuid.uuid4().hex[:6]}@example.com") for i in range(n)]
    costs: dict[str, float] = {}
    with httpx.Client(base_url=base, timeout=60) as c:
        for u in users:
            body = {"email": u.email, "password": PASSWORD, "display_name": "u", "role": "consumer"}
            r = c.post("/api/v1/auth/register", json=body)
            assert r.status_code == 202, r.text

        def login_all() -> None:
            for u in users:
                r = c.post("/api/v1/auth/token", data={"username": u.email, "password": PASSWORD})
                assert r.status_code == 200, r.text
                u.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

        costs["login_cpu_ms"] = cpu_per(cpu, n, login_all)
        for u in users:
            if mode == "pin":
                r = c.post("/api/v1/wallets", json={"pin": PIN}, headers=u.headers)
                assert r.status_code == 201, r.text
                u.address = r.json()["address"]
                continue
            account = Account.create()
            u.signer = LocalSigner.from_key_bytes(
                account.key, chain_id=coin["chain_id"], allowed_contracts=[coin["address"]]
            )
            u.address = account.address
            msg = c.post(
                "/api/v1/wallets/link/challenge", json={"address": u.address}, headers=u.headers
            ).json()["message"]
            sig = account.sign_message(encode_defunct(text=msg)).signature.hex()
            body = {"address": u.address, "message": msg, "signature": sig}
            r = c.post("/api/v1/wallets/link", json=body, headers=u.headers)
            assert r.status_code == 201, r.text

    def mint(u: BenchUser) -> None:
        r = httpx.post(
            f"{base}/api/v1/admin/coin/mint",
            json={"to": u.address, "amount": "1000000"},
            headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text

    costs["mint_cpu_ms"] = cpu_per(cpu, n, lambda: in_parallel(users, mint))
    return users, costs


def coin_info_cpu(base: str, cpu: ServiceCpu, count: int = 300) -> float:
    with httpx.Client(base_url=base, timeout=60) as c:
        c.get("/api/v1/coin").raise_for_status()

        def read() -> None:
            for _ in range(count):
                c.get("/api/v1/coin").raise_for_status()

        return cpu_per(cpu, count, read)


def argon2_ms() -> float:
    """CPU time of one Argon2id verification (account passwords) here and now: this machine's speed
    varies from run to run."""
    from app.core.security import hash_secret, verify_secret

    hashed = hash_secret(PASSWORD)
    start = time.process_time()
    for _ in range(10):
        verify_secret(hashed, PASSWORD)
    return round((time.process_time() - start) * 100, 1)


def start_profile(cpu: ServiceCpu, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy on the service's (first) process for `seconds`, if ESSX_BENCH_PROFILE names an output."""
    out = os.environ.get("ESSX_BENCH_PROFILE")
    if not out:
        return None
    pids = [
        proc.name
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and cpu.marker in _environ(proc) and b"essx" in _cmdline(proc)
    ]
    spy = Path(sys.executable).parent / "py-spy"
    args = ["record", "-p", min(pids, key=int), "-r", "100", "-f", "raw", "-o", out, "--nonblocking"]
    args += os.environ.get("ESSX_BENCH_PROFILE_ARGS", "").split()
    return subprocess.Popen([str(spy), *args, "-d", str(round(seconds))], stdout=subprocess.DEVNULL)


def _environ(proc: Path) -> list[bytes]:
    try:
        return (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def run(users: int, seconds: float, block_time: float, mode: str) -> dict[str, object]:
    calibration = argon2_ms()
    with running_service(block_time) as svc:
        cpu = ServiceCpu(svc.data_dir)
        admin = {"Authorization": f"Bearer {svc.admin_token()}"}
        coin = httpx.get(f"{svc.base}/api/v1/coin").json()
        people, costs = make_users(svc.base, admin, users, mode, cpu, coin)
        costs["coin_info_cpu_ms"] = coin_info_cpu(svc.base, cpu)
        sink = Account.create().address
        started: dict[str, float] = {}
        errors: list[str] = []
        stop_at = time.time() + seconds

        def worker(u: BenchUser) -> None:
            with httpx.Client(base_url=svc.base, headers=u.headers, timeout=60) as c:
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
                    created = r.json()
                    if u.signer is None:
                        proof = {"pin": PIN}
                    else:
                        typed = created["challenge"]["typed_data"]
                        proof = {"signature": "0x" + u.signer.sign_typed_data(typed).hex()}
                    r = c.post(f"/api/v1/transfers/{created['id']}/authorize", json=proof)
                    if r.status_code != 200:
                        errors.append(r.text[:200])
                        continue
                    started[created["id"]] = t0

        threads = [threading.Thread(target=worker, args=(u,)) for u in people]
        profile = start_profile(cpu, seconds)
        cpu_before, switches_before = cpu.times(), cpu.switches()
        begin = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submitted_in = time.time() - begin
        # let the last batches be mined, then read every transfer's recorded steps
        time.sleep(max(3.0, 3 * block_time))
        cpu_after, switches = cpu.times(), cpu.switches() - switches_before
        transfers_cpu = sum(cpu_after) - sum(cpu_before)
        transfers_sys = cpu_after[1] - cpu_before[1]
        if profile is not None:
            profile.wait()
        latencies, confirmed, failed = [], 0, 0
        gaps: dict[str, list[float]] = {name: [] for name in GAPS}
        batches: dict[str, dict[str, Any]] = {}  # by relay transaction: when submitted, its block, its size
        with httpx.Client(base_url=svc.base, timeout=60) as c:
            for u in people:
                items = c.get("/api/v1/transfers?direction=out&limit=500", headers=u.headers).json()["items"]
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
                        details = {s["kind"]: s["details"] for s in t["steps"]}
                        batch = batches.setdefault(
                            details["submitted"].get("tx_hash", ""),
                            {"at": at["submitted"], "block": details["mined"].get("block_number"), "n": 0},
                        )
                        batch["n"] += 1
                    elif t["status"] == "failed":
                        failed += 1
    return {
        "bench": "transfers",
        "mode": mode,
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
        # service CPU per operation (all its processes, without the chain node)
        "transfer_cpu_ms": round(transfers_cpu * 1000 / confirmed, 2) if confirmed else None,
        # of which the kernel's (system time), and the service's threads' context switches per transfer
        "transfer_sys_ms": round(transfers_sys * 1000 / confirmed, 2) if confirmed else None,
        "transfer_switches": round(switches / confirmed, 1) if confirmed else None,
        **costs,
        "argon2_cpu_ms": calibration,  # one password check in the bench's process, for comparison
        # where a transfer's latency goes (medians, ms), from the steps the service recorded
        "p50_gaps_ms": {name: round(percentile(v, 50) * 1000) for name, v in gaps.items() if v},
        # and their tails: the step whose p99 is large is the one that holds the latency's p99
        "p90_gaps_ms": {name: round(percentile(v, 90) * 1000) for name, v in gaps.items() if v},
        "p99_gaps_ms": {name: round(percentile(v, 99) * 1000) for name, v in gaps.items() if v},
        **batch_stats(list(batches.values())),
    }


def batch_stats(batches: list[dict[str, Any]]) -> dict[str, object]:
    """The relay transactions seen: how many, their sizes, the time between two submissions (the
    batcher's cadence) and how many blocks apart consecutive ones were mined (pipelining)."""
    if not batches:
        return {}
    batches.sort(key=lambda b: b["at"])
    sizes = [float(b["n"]) for b in batches]
    every = [b["at"] - a["at"] for a, b in pairwise(batches)] or [0.0]
    blocks = [b["block"] for b in batches if b["block"] is not None]
    return {
        "batches": len(batches),
        "batch_size_p50_max": [round(percentile(sizes, 50)), round(max(sizes))],
        "batch_every_ms_p50_p99_max": [round(percentile(every, p) * 1000) for p in (50, 99, 100)],
        "blocks_with_batches": f"{len(set(blocks))} of {max(blocks) - min(blocks) + 1}" if blocks else None,
    }


def main() -> None:
    concurrent_users_main(
        lambda a: run(a.users, a.seconds, a.block_time, a.mode),
        choices={"mode": ("pin", "signature")},
        block_time=1.0,
    )


if __name__ == "__main__":
    main()
