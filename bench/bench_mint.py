"""Mints through the API and indexer catch-up (events/s).

- concurrent: `--concurrent` mints (default 200) from 10 client threads on 1-second blocks, as the
  transfer bench's set-up mints: server CPU per mint (every service process, its background work included;
  the target of issue 14 is <= 10 ms), p50/p99.
- sequential: `--mints` mints one after another on 1-second blocks and on automine: p50/p99 latency and
  CPU per mint (on 1-second blocks each mint waits a block, so that CPU holds a second of idle work).

.venv/bin/python -m bench.bench_mint [--mints 200] [--concurrent 200] [--events 5000] [--only concurrent]

`ESSX_BENCH_PROFILE=out.txt` records the service with py-spy during the concurrent mints (collapsed
stacks; `ESSX_BENCH_PROFILE_ARGS=--gil` for the GIL holder only), as bench_transfers does.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid

import httpx
from eth_account import Account
from web3 import Web3

from app.context import build_context
from app.core.config import Settings
from app.indexer.service import reindex
from bench.bench_transfers import start_profile
from bench.service import ServiceCpu, machine, percentile, running_service
from contracts.deploy import load_deployment
from wallet.localchain import ANVIL_DEV_KEYS


def mint_latency(block_time: float, count: int) -> dict[str, object]:
    with running_service(block_time) as svc:
        token = svc.admin_token()
        headers = {"Authorization": f"Bearer {token}"}
        holder = Account.create().address
        latencies = []
        cpu = ServiceCpu(svc.data_dir)
        with httpx.Client(base_url=svc.base, headers=headers, timeout=60) as client:
            _mint(client, holder)  # the first mint creates the nonce counter: not measured
            cpu_before = cpu.seconds()
            for _ in range(count):
                start = time.perf_counter()
                r = client.post(
                    "/api/v1/admin/coin/mint",
                    json={"to": holder, "amount": "1"},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
                latencies.append(time.perf_counter() - start)
                assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
            cpu_ms = (cpu.seconds() - cpu_before) * 1000 / count
            balance = client.get(f"/api/v1/accounts/{holder}/balance").json()["balance"]
        assert balance == str(count + 1)
    return {
        "bench": "mint_latency",
        "block_time_s": block_time,
        "mints": count,
        "cpu_per_mint_ms": round(cpu_ms, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "mean_ms": round(sum(latencies) / len(latencies) * 1000, 1),
    }


def _mint(client: httpx.Client, holder: str) -> float:
    start = time.perf_counter()
    r = client.post(
        "/api/v1/admin/coin/mint",
        json={"to": holder, "amount": "1"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
    return time.perf_counter() - start


def concurrent_mints(count: int, threads: int = 10) -> dict[str, object]:
    """`count` mints from `threads` clients at once on 1-second blocks: server CPU per mint."""
    with running_service(1.0) as svc:
        headers = {"Authorization": f"Bearer {svc.admin_token()}"}
        holders = [Account.create().address for _ in range(threads)]
        cpu = ServiceCpu(svc.data_dir)
        latencies: list[float] = []
        with httpx.Client(base_url=svc.base, headers=headers, timeout=60) as client:
            _mint(client, holders[0])  # the first mint creates the nonce counter: not measured

        def run(holder: str, n: int) -> None:
            with httpx.Client(base_url=svc.base, headers=headers, timeout=60) as c:
                latencies.extend(_mint(c, holder) for _ in range(n))

        shares = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
        workers = [threading.Thread(target=run, args=(h, n)) for h, n in zip(holders, shares, strict=True)]
        start, cpu_before = time.perf_counter(), cpu.seconds()
        profile = start_profile(cpu, count / threads * 1.1)
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed, cpu_ms = time.perf_counter() - start, (cpu.seconds() - cpu_before) * 1000 / count
        if profile is not None:
            profile.wait()
        assert len(latencies) == count
    return {
        "bench": "mint_concurrent",
        "block_time_s": 1.0,
        "mints": count,
        "threads": threads,
        "cpu_per_mint_ms": round(cpu_ms, 2),
        "mints_per_s": round(count / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def indexer_catch_up(events: int) -> dict[str, object]:
    """Fills a chain with `events` Transfer events (signed locally, sent in nonce order), then times a
    full rebuild of the index from the chain."""
    with running_service(0) as svc:
        w3 = Web3(Web3.HTTPProvider(svc.chain_url))
        admin = Account.from_key(ANVIL_DEV_KEYS[0])
        deployment = load_deployment(svc.data_dir / "deployments", int(w3.eth.chain_id))
        assert deployment is not None
        coin = w3.eth.contract(address=deployment.address("EnergyCoin"), abi=_abi())
        nonce = w3.eth.get_transaction_count(admin.address, "pending")
        fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
        holders = [Account.create().address for _ in range(50)]
        w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
        for i in range(events):
            tx = coin.functions.mint(holders[i % 50], 1).build_transaction(
                {
                    "from": admin.address,
                    "nonce": nonce + i,
                    "gas": 100_000,
                    "chainId": w3.eth.chain_id,
                    **fees,
                }
            )
            w3.eth.send_raw_transaction(admin.sign_transaction(tx).rawTransaction)
            if i % 500 == 499:
                w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        settings = Settings(
            data_dir=svc.data_dir,
            chain="local",
            rpc_urls=[svc.chain_url],
            database_url=f"sqlite:///{svc.data_dir / 'essx.db'}",
        )
        ctx = build_context(settings)
        start = time.perf_counter()
        stored = reindex(ctx)
        elapsed = time.perf_counter() - start
        ctx.close()
    return {
        "bench": "indexer_catch_up",
        "events": stored,
        "seconds": round(elapsed, 2),
        "events_per_s": round(stored / elapsed),
    }


def _abi() -> list[dict[str, object]]:
    from contracts.artifacts import load_artifact

    return load_artifact("EnergyCoin").abi


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mints", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--only", choices=("concurrent", "sequential", "indexer"), action="append")
    args = parser.parse_args()
    runs = args.only or ["concurrent", "sequential", "indexer"]
    print(json.dumps({"machine": machine(), "load": round(os.getloadavg()[0], 2)}))
    if "concurrent" in runs:
        print(json.dumps(concurrent_mints(args.concurrent)), flush=True)
    if "sequential" in runs:
        for block_time in (1.0, 0.0):
            print(json.dumps(mint_latency(block_time, args.mints)), flush=True)
    if "indexer" in runs:
        print(json.dumps(indexer_catch_up(args.events)), flush=True)
    print(json.dumps({"load_after": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
