"""`make bench`: every benchmark once, briefly, each in its own process (its own CPU clock and exit).

The numbers of docs/benchmarks.md come from longer runs of the single benchmarks (see their --help);
this is the smoke run that shows each still works and roughly where it stands on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

BRIEF: dict[str, list[str]] = {
    "bench.bench_matching": ["--quick", "--repeat", "1"],
    "bench.bench_dispatch": ["--sites", "5", "--hours", "6"],
    "bench.bench_collector": ["--sites", "100", "--seconds", "3", "--db", "sqlite", "--gas-sizes", "10"],
    "bench.bench_mint": ["--mints", "20", "--events", "500"],
    "bench.bench_idle": ["--settle", "5", "--seconds", "10"],
    "bench.bench_transfers": ["--users", "5", "--seconds", "5"],
    "bench.bench_orders": ["--users", "5", "--seconds", "5"],
    "bench.bench_market_gas": [
        *("--gas-trades", "200", "--recurring-trades", "40", "--throughput-trades", "200"),
        *("--e2e-trades", "100", "--buyers", "10"),
    ],
}


def main() -> int:
    print(f"load: {os.getloadavg()}", flush=True)
    failed = []
    for module, args in BRIEF.items():
        print(f"\n== {module} {' '.join(args)}", flush=True)
        started = time.monotonic()
        if subprocess.run([sys.executable, "-m", module, *args], check=False).returncode != 0:
            failed.append(module)
        print(f"== {module}: {time.monotonic() - started:.1f} s wall", flush=True)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
