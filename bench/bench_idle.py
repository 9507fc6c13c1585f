"""The service's CPU when nobody calls it (issue 14): the floor under every other benchmark's CPU per op.

Starts `essx run` (one worker, SQLite, anvil with 1-second blocks, its three simulated sites and the
in-process collector), lets it settle, then reads the CPU of the service's Python processes over a window:
milliseconds of CPU per second of wall time. The chain node's CPU is reported beside it, not in it.

.venv/bin/python -m bench.bench_idle [--settle 10] [--seconds 30] [--repeat 1]

Beside the total, the CPU of each thread name (the worker loops name their threads in the operating system:
common/worker.py `name_os_thread`; a thread a loop starts inherits the loop's name; the main thread, which
runs uvicorn's event loop, is `essx`). A run on a commit without the names shows every thread as `essx`.

`ESSX_BENCH_PROFILE=out.txt` records the service with py-spy over the window (collapsed stacks;
`ESSX_BENCH_PROFILE_ARGS=--idle` to see the sleeping threads too), as bench_transfers does.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.bench_transfers import start_profile
from bench.service import ServiceCpu, machine, running_service

TICK = os.sysconf("SC_CLK_TCK")


def thread_ticks(cpu: ServiceCpu) -> dict[str, int]:
    """Clock ticks of CPU so far per thread name, over the service's Python processes."""
    ticks: dict[str, int] = {}
    for proc in cpu.procs():
        try:
            tasks = list((proc / "task").iterdir())
        except OSError:  # ended meanwhile
            continue
        for task in tasks:
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended meanwhile
                continue
            ticks[name] = ticks.get(name, 0) + int(fields[11]) + int(fields[12])
    return ticks


def anvil_seconds(chain_url: str) -> float:
    """CPU seconds of the anvil listening on the chain URL's port (found by its command line)."""
    port = chain_url.rsplit(":", 1)[1].encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if not argv or not argv[0].endswith(b"anvil") or port not in argv:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / TICK
    return 0.0


def run(settle: float, seconds: float, repeat: int, block_time: float) -> dict[str, object]:
    windows: list[float] = []
    chain: list[float] = []
    per_thread: dict[str, float] = {}
    measured = 0.0
    with running_service(block_time) as svc:
        cpu = ServiceCpu(svc.data_dir)
        time.sleep(settle)  # start-up's one-off work (migrations, first passes, the first polls) is over
        for _ in range(repeat):
            spy = start_profile(cpu, seconds)
            threads_before = thread_ticks(cpu)
            started, before, node_before = time.monotonic(), cpu.seconds(), anvil_seconds(svc.chain_url)
            time.sleep(seconds)
            wall = time.monotonic() - started
            for name, ticks in thread_ticks(cpu).items():
                per_thread[name] = per_thread.get(name, 0) + ticks - threads_before.get(name, 0)
            measured += wall
            windows.append((cpu.seconds() - before) * 1000 / wall)
            chain.append((anvil_seconds(svc.chain_url) - node_before) * 1000 / wall)
            if spy is not None:
                spy.wait()
    ordered = sorted(windows)
    return {
        "bench": "idle",
        "block_time_s": block_time,
        "window_s": seconds,
        "idle_cpu_ms_per_s": round(ordered[len(ordered) // 2], 2),
        "windows_ms_per_s": [round(w, 2) for w in windows],
        "anvil_cpu_ms_per_s": round(sorted(chain)[len(chain) // 2], 2),
        # every window together; a clock tick is 10 ms, so over 30 s the resolution is 0.33 ms/s
        "threads_ms_per_s": {
            name: round(ticks * 1000 / TICK / measured, 2)
            for name, ticks in sorted(per_thread.items(), key=lambda kv: -kv[1])
            if ticks
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--settle", type=float, default=10, help="seconds after start-up before measuring")
    parser.add_argument("--seconds", type=float, default=30, help="length of one measured window")
    parser.add_argument("--repeat", type=int, default=1, help="windows measured back to back (median)")
    parser.add_argument("--block-time", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    load_before = os.getloadavg()
    result = run(args.settle, args.seconds, args.repeat, args.block_time)
    result["load_before"] = round(load_before[0], 2)
    result["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
