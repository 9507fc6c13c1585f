"""Mint latency through the API (p50/p99 over 200 sequential mints) and indexer catch-up (events/s).

.venv/bin/python -m bench.bench_mint [--mints 200] [--events 5000]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import httpx
from eth_account import Account
from web3 import Web3

from app.context import build_context
from app.core.config import Settings
from app.indexer.service import reindex
from bench.service import machine, percentile, running_service
from contracts.deploy import load_deployment
from wallet.localchain import ANVIL_DEV_KEYS


def mint_latency(block_time: float, count: int) -> dict[str, object]:
    with running_service(block_time) as svc:
        token = svc.admin_token()
        headers = {"Authorization": f"Bearer {token}"}
        holder = Account.create().address
        latencies = []
        with httpx.Client(base_url=svc.base, headers=headers, timeout=60) as client:
            for _ in range(count):
                start = time.perf_counter()
                r = client.post(
                    "/api/v1/admin/coin/mint",
                    json={"to": holder, "amount": "1"},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
                latencies.append(time.perf_counter() - start)
                assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
            balance = client.get(f"/api/v1/accounts/{holder}/balance").json()["balance"]
        assert balance == str(count)
    return {
        "bench": "mint_latency",
        "block_time_s": block_time,
        "mints": count,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "mean_ms": round(sum(latencies) / len(latencies) * 1000, 1),
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
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    for block_time in (1.0, 0.0):
        print(json.dumps(mint_latency(block_time, args.mints)), flush=True)
    print(json.dumps(indexer_catch_up(args.events)), flush=True)


if __name__ == "__main__":
    main()
