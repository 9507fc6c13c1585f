"""The fixed cost of a request: the service's CPU per request on cheap routes.

    .venv/bin/python -m bench.bench_requests [--requests 3000] [--clients 4]

Every money route pays the same framework cost before and after its own work: uvicorn's parser, the
request-context middleware (request id, metrics, body limits), routing, the bearer token, the user's row,
the session and its thread-pool hops, validation and serialisation, the error handlers. This starts a
service (`essx run`, as the other benchmarks do) and sends each kind of request `--requests` times from
`--clients` threads with kept-alive connections, printing the service process's CPU time per request
(user + system, from /proc): the number to compare back to back between two trees; throughput is
printed too but follows the machine's other load.

`ESSX_BENCH_PROFILE=<folder>` records each kind with py-spy (installed beside this Python, `--gil`,
collapsed stacks) into `<folder>/<kind>.txt`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.service import ServiceCpu, machine, running_service

Call = Callable[[httpx.Client], httpx.Response]


def kinds(token: str) -> dict[str, tuple[Call, int]]:
    """What is sent, and the status it must answer."""
    auth = {"Authorization": f"Bearer {token}"}
    bad = {"Authorization": "Bearer not-a-token"}
    return {
        # unauthenticated, async route answered from a cache: the framework alone
        "coin": (lambda c: c.get("/api/v1/coin"), 200),
        # the bearer token and the user's row (a sync route: the thread pool)
        "users_me": (lambda c: c.get("/api/v1/users/me", headers=auth), 200),
        # a refused token: 401 before the body is looked at
        "bad_token_post": (lambda c: c.post("/api/v1/transfers", headers=bad, json={"to": "x"}), 401),
        # the same on a route whose router comes late in the routing order (the market's)
        "bad_token_order": (lambda c: c.post("/api/v1/orders", headers=bad, json={"side": "x"}), 401),
        # a valid token, an invalid body: validation and the error handler
        "invalid_body_post": (
            lambda c: c.post(
                "/api/v1/transfers", headers={**auth, "Idempotency-Key": "k"}, json={"amount": "x"}
            ),
            422,
        ),
    }


def hammer(base: str, call: Call, expect: int, total: int, clients: int) -> None:
    errors: list[str] = []

    def loop(n: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(n):
                r = call(client)
                if r.status_code != expect:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    return

    share = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=loop, args=(n,)) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"unexpected answer: {errors[0]}")


def service_pid(data_dir: Path) -> str:
    marker = f"ESSX_DATA_DIR={data_dir}".encode()
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and marker in (proc / "environ").read_bytes().split(b"\0")
                and b"essx" in (proc / "cmdline").read_bytes()
            ):
                return proc.name
        except OSError:
            continue
    raise SystemExit("no service process")


def user_system(pid: str) -> tuple[float, float]:
    """The process's user and system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    profile = os.environ.get("ESSX_BENCH_PROFILE")
    with running_service(extra_env={"ESSX_DEMO_SITES": "0"}) as svc:
        cpu = ServiceCpu(svc.data_dir)
        token = svc.admin_token()
        result: dict[str, object] = {"load_before": round(os.getloadavg()[0], 2)}
        # the background workers' own CPU while no request comes: subtracted from each kind's (`_net`)
        time.sleep(2)
        before = cpu.seconds()
        time.sleep(5)
        idle_per_s = (cpu.seconds() - before) / 5
        result["idle_cpu_ms_per_s"] = round(idle_per_s * 1000, 1)
        for name, (call, expect) in kinds(token).items():
            if args.only and name not in args.only:
                continue
            hammer(svc.base, call, expect, 200, args.clients)  # warm up: caches, pools, connections
            spy = None
            if profile:
                Path(profile).mkdir(parents=True, exist_ok=True)
                spy_args = [
                    "record",
                    "-p",
                    service_pid(svc.data_dir),
                    "-r",
                    "500",
                    "-f",
                    "raw",
                    "--nonblocking",
                ]
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), *spy_args, "-o", f"{profile}/{name}.txt"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            pid = service_pid(svc.data_dir)
            split = user_system(pid)
            before, start = cpu.seconds(), time.perf_counter()
            hammer(svc.base, call, expect, args.requests, args.clients)
            used, elapsed = cpu.seconds() - before, time.perf_counter() - start
            after = user_system(pid)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            result[f"{name}_cpu_ms"] = round(used * 1000 / args.requests, 3)
            result[f"{name}_net_cpu_ms"] = round((used - idle_per_s * elapsed) * 1000 / args.requests, 3)
            result[f"{name}_sys_ms"] = round((after[1] - split[1]) * 1000 / args.requests, 3)
            result[f"{name}_per_s"] = round(args.requests / elapsed, 1)
        result["load_after"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
