"""ESS collector: site polls per second of one collector process, and gas to anchor one slot.

.venv/bin/python -m bench.bench_collector [--sites 100,500,1000] [--seconds 15] [--db sqlite,postgresql]
    [--per-process 500] [--repeat 1] [--skip-gas]

Polls: the simulated sites run in separate processes (``--per-process`` sites each, real time) on their
own ports; this process is the one collector: a Collector polls all sites back to back (three
whole-model Modbus reads per site, decode, validation, one database transaction per round) and counts
answered site-polls per second. Reported per run:

- ``polls_per_s``: answered site-polls per second end to end;
- ``cpu_ms_per_poll`` (``user`` + ``sys``): this process's CPU time per answered site-poll, from
  ``getrusage`` (its only work is collecting: the simulators and the database are other processes);
- ``polls_per_core``: 1,000 / cpu_ms_per_poll, the rate one dedicated core sustains at that cost;
- ``sim_cpu_ms_per_poll``: the simulator processes' CPU per site-poll (from /proc), and ``load``: the
  1-minute load average before and after (the machine may be shared).

When the collector, the simulators and the database share few cores, ``polls_per_s`` is bounded by
their sum; ``polls_per_core`` is what the collector alone allows.

Gas: a fresh MeterLedger on anvil; one `anchor` per slot with a Merkle root over N site-slot leaves, and
`verify` of one proof (log2 N siblings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
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
from app.users.models import Role, User, UserStatus
from bench.service import machine, percentile
from common import clock, merkle
from contracts.artifacts import deploy_contract, load_artifact
from ess_collector.collector import Collector
from ess_collector.config import CollectorConfig
from ess_collector.models import Site
from wallet.localchain import ANVIL_DEV_KEYS, AnvilNode, free_port

ROOT = Path(__file__).resolve().parents[1]
PER_PROCESS = 500
BASE_PORT = 21000
PG_ADMIN_URL = os.environ.get("ESSX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class SimulatorProcesses(list[subprocess.Popen[str]]):
    def cpu_seconds(self) -> float:
        """User + system CPU of the simulator processes so far (from /proc/<pid>/stat)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for proc in self:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / ticks


@contextmanager
def simulators(
    n_sites: int, per_process: int = PER_PROCESS, speed: float = 1.0
) -> Iterator[tuple[list[int], SimulatorProcesses]]:
    """n_sites simulated sites in ceil(n / per_process) processes; yields their ports and processes.

    With ``speed`` other than 1 the simulators and this process's energy clock (the collector's
    timestamps) run at that speed from the same start and anchor, so rates and balances still agree.
    """
    start, anchor = clock.now().replace(microsecond=0), time.time()
    clock.configure(speed, start if speed != 1 else None, anchor)
    procs, ports = SimulatorProcesses(), []
    try:
        for first in range(0, n_sites, per_process):
            count = min(per_process, n_sites - first)
            base = BASE_PORT + first
            cmd = [sys.executable, "-m", "ess_collector.simulator", "--sites", str(count)]
            cmd += ["--base-port", str(base), "--seed", str(first)]
            cmd += ["--speed", str(speed), "--start", start.isoformat(), "--anchor", repr(anchor)]
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            procs.append(proc)
            ports += list(range(base, base + count))
        for proc in procs:
            line = proc.stdout.readline() if proc.stdout else ""
            if "sites on" not in line:
                raise RuntimeError(f"simulator did not start: {line!r}")
        yield ports, procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        clock.configure()  # the wall clock again


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


async def poll_rounds(
    collector: Collector, seconds: float, sims: SimulatorProcesses, cadence: float | None = None
) -> dict[str, object]:
    """Rounds back to back (the most this process can poll), or one round every ``cadence`` wall
    seconds (a round finishing within it means that cadence holds for every site)."""
    try:
        for _ in range(2):  # connect and load state; not measured
            await collector.poll_once()
        answered = failed = accepted = late = 0
        cycles: list[float] = []
        load0 = os.getloadavg()[0]
        t0, usage0, sim0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), sims.cpu_seconds()
        while time.perf_counter() - t0 < seconds:
            report = await collector.poll_once()
            answered += report.answered
            accepted += report.accepted
            failed += report.failed
            cycles.append(report.seconds)
            if cadence:
                late += report.seconds > cadence
                await asyncio.sleep(max(0.0, cadence - report.seconds))
        elapsed, usage1, sim1 = (
            time.perf_counter() - t0,
            resource.getrusage(resource.RUSAGE_SELF),
            sims.cpu_seconds(),
        )
    finally:
        collector.close()  # inside the loop: the connections belong to it
    user, system = usage1.ru_utime - usage0.ru_utime, usage1.ru_stime - usage0.ru_stime
    per_poll = 1000 / max(answered, 1)
    return {
        "polls_per_s": round(answered / elapsed),
        # The collector's own CPU per site-poll, and the rate one core allows at that cost: the figure
        # when the devices are real (not simulated on the same cores).
        "cpu_ms_per_poll": round((user + system) * per_poll, 3),
        "user_ms": round(user * per_poll, 3),
        "sys_ms": round(system * per_poll, 3),
        "polls_per_core": round(answered / (user + system)) if user + system else None,
        "sim_cpu_ms_per_poll": round((sim1 - sim0) * per_poll, 3),
        "round_p50_ms": round(percentile(cycles, 50) * 1000),
        "round_p99_ms": round(percentile(cycles, 99) * 1000),
        "rounds": len(cycles),
        "rounds_late": late if cadence else None,
        "failed": failed,
        "accepted_pct": round(100 * accepted / max(answered, 1), 1),
        "load": [round(load0, 1), round(os.getloadavg()[0], 1)],
    }


def polls(
    n_sites: int,
    seconds: float,
    db: str,
    per_process: int = PER_PROCESS,
    speed: float = 1.0,
    cadence: float | None = None,
) -> dict[str, object]:
    cfg = replace(CollectorConfig(), poll_interval_s=1.0, timeout_s=2.0, clock_speed=speed)
    with simulators(n_sites, per_process, speed) as (ports, procs), database(db) as engine:
        register(engine, ports)
        result = asyncio.run(poll_rounds(Collector(engine, cfg), seconds, procs, cadence))
    mode = f"every {cadence:g} s" if cadence else "back to back"
    head = {"bench": "collector_polls", "sites": n_sites, "db": db, "rounds_run": mode, "speed": speed}
    return head | {"sim_processes": len(procs), **result}


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
    ap.add_argument("--skip-gas", action="store_true")
    ap.add_argument("--per-process", type=int, default=PER_PROCESS, help="simulated sites per process")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each configuration")
    ap.add_argument(
        "--speed",
        default="auto",
        help="simulated seconds per wall second, shared by the simulators and the collector (default: 1 with "
        "--cadence, else 2,000 / sites: back-to-back rounds outrun devices that update once a simulated "
        "second, whose unchanged heartbeat makes readings stale, while much faster devices change between "
        "the three reads of one poll and make them unbalanced)",
    )
    ap.add_argument("--cadence", type=float, help="one round every this many seconds, not back to back")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # back-to-back rounds outrun the 1 Hz devices: stale faults
    print(json.dumps({"machine": machine()}), flush=True)
    if not args.skip_gas:
        for row in anchor_gas([int(x) for x in args.gas_sizes.split(",")]):
            print(json.dumps(row), flush=True)
    if args.skip_polls:
        return
    for db in args.db.split(","):
        for n in (int(x) for x in args.sites.split(",")):
            for _ in range(args.repeat):
                speed = (
                    float(args.speed) if args.speed != "auto" else 1.0 if args.cadence else max(1, 2000 / n)
                )
                row = polls(n, args.seconds, db, args.per_process, speed, args.cadence)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
