"""Start a throw-away ESSX service (`essx run`) for benchmarks, on free ports and a temporary data folder."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.demo.service import ServiceHandle, child_service


@contextmanager
def running_service(
    block_time: float = 1.0, extra_env: dict[str, str] | None = None
) -> Iterator[ServiceHandle]:
    with tempfile.TemporaryDirectory(prefix="essx-bench-") as tmp:
        env = {"ESSX_LOCAL_BLOCK_TIME": str(block_time), **(extra_env or {})}
        try:
            with child_service(Path(tmp), env, timeout=90) as handle:
                yield handle
        finally:
            keep = os.environ.get("ESSX_BENCH_KEEP_LOG")
            log = Path(tmp) / "service.log"
            if keep and log.exists():  # the service's log, for looking into a run afterwards
                Path(keep).write_bytes(log.read_bytes())


@contextmanager
def postgres_database(admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres") -> Iterator[str]:
    """A throw-away PostgreSQL database for one benchmark run."""
    import uuid

    import psycopg

    name = f"essx_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServiceCpu:
    """CPU time used so far by the service's Python processes (every API worker, not the chain node):
    found by the data folder in their environment, read from /proc (Linux)."""

    def __init__(self, data_dir: Path) -> None:
        self.marker = f"ESSX_DATA_DIR={data_dir}".encode()
        self.tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        return sum(self.times())

    def times(self) -> tuple[float, float]:
        """(user, system) CPU seconds: a request's system time is mostly its wake-ups and socket calls."""
        user = system = 0
        for proc in self.procs():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            user, system = user + int(fields[11]), system + int(fields[12])
        return user / self.tick, system / self.tick

    def switches(self) -> int:
        """Context switches so far of every thread of the service's processes (voluntary: a wait on a lock,
        a queue, a socket; involuntary: preempted), each a trip through the kernel's scheduler."""
        total = 0
        for proc in self.procs():
            for task in (proc / "task").glob("*"):
                try:
                    status = (task / "status").read_text()
                except OSError:
                    continue
                total += sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
        return total

    def procs(self) -> list[Path]:
        """/proc entries of the service's Python processes (marked by its environment)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if self.marker not in (proc / "environ").read_bytes().split(b"\0"):
                    continue
                if b"python" not in (proc / "cmdline").read_bytes():
                    continue
            except OSError:  # gone meanwhile, or not ours
                continue
            found.append(proc)
        return found


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"


def concurrent_users_main(
    run: Callable[[argparse.Namespace], dict[str, object]],
    choices: dict[str, tuple[str, ...]] | None = None,
    **defaults: float,
) -> None:
    """The command line of the concurrent-user benchmarks: --users, --seconds, --postgres, a float option
    per default and a choice per `choices` (the first is the default); prints JSON lines."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    for name, options in (choices or {}).items():
        parser.add_argument(f"--{name}", choices=options, default=options[0])
    for name, value in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=value)
    parser.add_argument(
        "--postgres", action="store_true", help="run the service on a throw-away PostgreSQL database"
    )
    parser.add_argument("--workers", type=int, default=1, help="API worker processes (ESSX_WORKERS)")
    args = parser.parse_args()
    os.environ["ESSX_WORKERS"] = str(args.workers)  # the service started by running_service inherits it
    print(json.dumps({"machine": machine()}))
    load_before = os.getloadavg()
    if args.postgres:
        with postgres_database() as url:
            os.environ["ESSX_DATABASE_URL"] = url
            result = run(args)
    else:
        result = run(args)
    result["database"] = "postgresql" if args.postgres else "sqlite"
    result["workers"] = args.workers
    # another user of the machine skews every number: say how busy it was (1-minute load averages)
    result["load_before"] = round(load_before[0], 2)
    result["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result), flush=True)
