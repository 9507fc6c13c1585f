"""ESS collector: site polls per second of one collector process, and gas to anchor one slot.

.venv/bin/python -m bench.bench_collector [--sites 100,500,1000] [--seconds 15] [--db sqlite,postgresql]

Polls: the simulated sites run in separate processes (250 sites each, real time) on their own ports; one
Collector polls all of them back to back (three whole-model Modbus reads per site, decode, validation,
one database transaction per round) and counts answered site-polls per second. The simulators share the
machine's cores with the collector, so on a machine with few cores the figure is a floor.

Gas: a fresh MeterLedger on anvil; one `anchor` per slot with a Merkle root over N site-slot leaves, and
`verify` of one proof (log2 N siblings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from eth_account import Account
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.security import utcnow
from app.models import Role, User, UserStatus
from app.models.site import Site
from bench.service import machine, percentile
from contracts.artifacts import deploy_contract, load_artifact
from ess_collector import merkle
from ess_collector.collector import Collector
from ess_collector.config import CollectorConfig
from wallet.localchain import ANVIL_DEV_KEYS, AnvilNode, free_port

ROOT = Path(__file__).resolve().parents[1]
PER_PROCESS = 250
BASE_PORT = 21000
PG_ADMIN_URL = os.environ.get("ESSX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def simulators(n_sites: int) -> Iterator[list[int]]:
    """n_sites simulated sites in ceil(n / 250) processes; yields their ports."""
    procs, ports = [], []
    try:
        for start in range(0, n_sites, PER_PROCESS):
            count = min(PER_PROCESS, n_sites - start)
            base = BASE_PORT + start
            cmd = [sys.executable, "-m", "ess_collector.simulator", "--sites", str(count)]
            cmd += ["--base-port", str(base), "--speed", "1", "--seed", str(start)]
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            procs.append(proc)
            ports += list(range(base, base + count))
        for proc in procs:
            line = proc.stdout.readline() if proc.stdout else ""
            if "sites on" not in line:
                raise RuntimeError(f"simulator did not start: {line!r}")
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


@contextmanager
def database(kind: str) -> Iterator[Engine]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            engine = make_engine(url)
            yield engine
            engine.dispose()
        return
    name = f"essx_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    try:
        upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def register(engine: Engine, ports: list[int]) -> None:
    with Session(engine) as s:
        owner = User(
            email="bench@example.com",
            password_hash="x",
            display_name="Bench",
            role=Role.prosumer,
            status=UserStatus.approved,
            created_at=utcnow(),
        )
        s.add(owner)
        s.flush()
        for port in ports:
            s.add(
                Site(
                    owner_id=owner.id or 0,
                    name=f"bench {port}",
                    host="127.0.0.1",
                    port=port,
                    device_id=1,
                    pv_nameplate_w=9000,
                    battery_capacity_wh=15_000,
                    reserve_soc_pct=10,
                    created_at=utcnow(),
                )
            )
        s.commit()


async def poll_rounds(collector: Collector, seconds: float) -> dict[str, float | None]:
    """Rounds back to back: the most this process can poll. A round under 1 s means a 1-second cadence
    for every site holds."""
    try:
        for _ in range(2):  # connect and load state; not measured
            await collector.poll_once()
        answered = failed = 0
        cycles: list[float] = []
        t0, cpu0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            report = await collector.poll_once()
            answered += report.answered
            failed += report.failed
            cycles.append(report.seconds)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        collector.close()  # inside the loop: the connections belong to it
    return {
        "polls_per_s": round(answered / elapsed),
        # The collector's own CPU per site-poll, and the rate one core allows at that cost: the figure
        # when the devices are real (not simulated on the same cores).
        "cpu_ms_per_poll": round(cpu / max(answered, 1) * 1000, 3),
        "cpu_bound_polls_per_s": round(answered / cpu) if cpu else None,
        "round_p50_ms": round(percentile(cycles, 50) * 1000),
        "round_p99_ms": round(percentile(cycles, 99) * 1000),
        "rounds": len(cycles),
        "failed": failed,
    }


def polls(n_sites: int, seconds: float, db: str) -> dict[str, object]:
    cfg = replace(CollectorConfig(), poll_interval_s=1.0, timeout_s=2.0)
    with simulators(n_sites) as ports, database(db) as engine:
        register(engine, ports)
        result = asyncio.run(poll_rounds(Collector(engine, cfg), seconds))
    return {"bench": "collector_polls", "sites": n_sites, "db": db, **result}


def anchor_gas(sizes: list[int]) -> list[dict[str, object]]:
    node = AnvilNode(port=free_port(), block_time=None).start()
    try:
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(node.url))
        admin = Account.from_key(ANVIL_DEV_KEYS[0])
        artifact = load_artifact("MeterLedger")
        ledger = w3.eth.contract(
            address=deploy_contract(w3, artifact, admin, admin.address), abi=artifact.abi
        )
        out = []
        slot = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp())
        for i, n in enumerate(sizes):
            start = slot + i * 900
            t0 = time.perf_counter()
            leaves = [merkle.leaf_hash(site, start, [800, 600, 100, 300, 50, 50]) for site in range(1, n + 1)]
            root = merkle.root(leaves)
            build_ms = (time.perf_counter() - t0) * 1000
            totals = [800 * n, 600 * n, 100 * n, 300 * n, 50 * n, 50 * n]
            tx = ledger.functions.anchor(start, root, n, totals).build_transaction(
                {"from": admin.address, "nonce": w3.eth.get_transaction_count(admin.address)}
            )
            receipt = w3.eth.wait_for_transaction_receipt(
                w3.eth.send_raw_transaction(admin.sign_transaction(tx).rawTransaction)
            )
            proof = merkle.proof(leaves, leaves[-1])
            verify_gas = ledger.functions.verify(start, leaves[-1], proof).estimate_gas()
            assert ledger.functions.verify(start, leaves[-1], proof).call()
            out.append(
                {
                    "bench": "anchor_gas",
                    "sites": n,
                    "anchor_gas": int(receipt["gasUsed"]),
                    "verify_gas": int(verify_gas),
                    "proof_len": len(proof),
                    "tree_ms": round(build_ms, 1),
                }
            )
        return out
    finally:
        node.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sites", default="100,500,1000")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--gas-sizes", default="10,100,1000")
    ap.add_argument("--skip-polls", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # back-to-back rounds outrun the 1 Hz devices: stale faults
    print(json.dumps({"machine": machine()}), flush=True)
    for row in anchor_gas([int(x) for x in args.gas_sizes.split(",")]):
        print(json.dumps(row), flush=True)
    if args.skip_polls:
        return
    for db in args.db.split(","):
        for n in (int(x) for x in args.sites.split(",")):
            print(json.dumps(polls(n, args.seconds, db)), flush=True)


if __name__ == "__main__":
    main()
