"""A large schemathesis run over the whole OpenAPI of a real `essx run` process; prints the figures.

    .venv/bin/python -m scripts.fuzz_api                         # SQLite, 100 cases per operation and phase
    .venv/bin/python -m scripts.fuzz_api --postgres -n 300       # on a throw-away PostgreSQL database
    .venv/bin/python -m scripts.fuzz_api --max-time 1800 --out fuzz-report

It starts `essx run` on free ports in a temporary data folder (no simulated sites; access tokens valid for a
day so a long run stays authenticated), creates an admin (`essx create-admin`) and a prosumer (registered,
approved, a custodial wallet with PIN 123456 and 100 coins), then runs `schemathesis run` over /openapi.json
once per identity (prosumer, then admin; /stream is asked to close at once, scripts/fuzz_hooks.py) with every phase (examples, coverage, fuzzing, stateful), positive
and negative data, and the checks:

- not_a_server_error: no 5xx, whatever the input;
- status_code_conformance, content_type_conformance, response_schema_conformance: every answer is one the
  document describes, in the shape it describes.

It prints per identity and in total the test cases generated, the operations tested, the server errors
(schemathesis' unique failures of `not_a_server_error`, and every 5xx response counted in its event log),
the other failures by kind, the duration and schemathesis' version, and leaves the reports (JSON, NDJSON
with every request, a pytest file reproducing each failure) in --out. Exit status 1 when any answer was a
5xx. The bounded run in the suite is tests/api/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from app.demo.service import ServiceHandle, child_service
from bench.service import postgres_database

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
HOOKS = Path(__file__).resolve().with_name("fuzz_hooks.py")  # /stream: once=true
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
PASSWORD = "fuzz-password-1"


def prosumer_token(service: ServiceHandle, admin: dict[str, str]) -> str:
    """A prosumer as a newcomer makes one: registered, approved, with a wallet and some coins."""
    email = f"prosumer-{uuid.uuid4().hex[:6]}@example.com"
    api = f"{service.base}/api/v1"
    user = httpx.post(
        f"{api}/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": "Fuzz", "role": "prosumer"},
    )
    user.raise_for_status()  # 202 whether or not the email was new: the id comes from /users/me
    token = httpx.post(f"{api}/auth/token", data={"username": email, "password": PASSWORD})
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    me = httpx.get(f"{api}/users/me", headers=headers)
    me.raise_for_status()
    httpx.post(f"{api}/admin/users/{me.json()['id']}/approve", headers=admin).raise_for_status()
    wallet = httpx.post(f"{api}/wallets", json={"pin": "123456"}, headers=headers)
    wallet.raise_for_status()
    httpx.post(
        f"{api}/admin/coin/mint",
        json={"to": wallet.json()["address"], "amount": "100"},
        headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
        timeout=60,
    ).raise_for_status()
    return str(headers["Authorization"])


def run_schemathesis(
    service: ServiceHandle, authorization: str, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    command = [
        SCHEMATHESIS,
        "run",
        f"{service.base}/openapi.json",
        "--header",
        f"Authorization:{authorization}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(args.examples),
        "--workers",
        str(args.workers),
        "--seed",
        str(args.seed),
        "--request-timeout",
        "30",
        "--report",
        "json,ndjson,pytest",
        "--report-dir",
        str(out),
        "--no-color",
    ]
    if args.max_time:
        command += ["--max-time", str(args.max_time)]
    started = time.monotonic()
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    with (out / "schemathesis.log").open("w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False, cwd=out, env=env)
    seconds = time.monotonic() - started
    report = json.loads(next(out.glob("*.json")).read_text())
    return {"seconds": seconds, "report": report, "responses": status_counts(out)}


def status_counts(out: Path) -> Counter[int]:
    """Every response's status, from the NDJSON event log."""
    counts: Counter[int] = Counter()
    for path in out.glob("*.ndjson"):
        with path.open() as f:
            for line in f:
                for status in _statuses(json.loads(line)):
                    counts[status] += 1
    return counts


def _statuses(node: Any) -> list[int]:
    found: list[int] = []
    if isinstance(node, dict):
        if isinstance(node.get("status_code"), int) and "elapsed" in node:
            found.append(node["status_code"])
        for value in node.values():
            found += _statuses(value)
    elif isinstance(node, list):
        for value in node:
            found += _statuses(value)
    return found


def summarise(name: str, result: dict[str, Any]) -> dict[str, Any]:
    report = result["report"]
    failures = {f["title"]: f["count"] for f in report["failures"]}
    server_errors = sum(f["count"] for f in report["failures"] if f["type"] == "ServerError")
    responses = result["responses"]
    return {
        "identity": name,
        "test_cases": report["test_cases"]["generated"],
        "operations_tested": report["operations"]["tested"] if report["operations"] else 0,
        "operations_total": report["operations"]["total"] if report["operations"] else 0,
        "server_errors_unique": server_errors,
        "server_error_operations": sorted(
            {op for f in report["failures"] if f["type"] == "ServerError" for op in f["operations"]}
        ),
        "responses": sum(responses.values()),
        "responses_5xx": sum(n for status, n in responses.items() if status >= 500),
        "failures": failures,
        "errors": report["errors"],
        "seconds": round(result["seconds"], 1),
        "stop_reason": report["stop_reason"],
        "schemathesis": report["schemathesis_version"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--examples", type=int, default=100, help="cases per operation and phase")
    parser.add_argument("--max-time", type=int, default=0, help="seconds per identity (0: no limit)")
    parser.add_argument("--workers", type=int, default=2, help="concurrent schemathesis workers")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--postgres", action="store_true", help="a throw-away PostgreSQL database")
    parser.add_argument("--out", type=Path, default=None, help="where the reports go (default: a temp dir)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="essx-fuzz-"))
    env = {"ESSX_DEMO_SITES": "0", "ESSX_ACCESS_TOKEN_MINUTES": "1440", "ESSX_LOCAL_BLOCK_TIME": "0"}
    with ExitStack() as stack:
        if args.postgres:
            env["ESSX_DATABASE_URL"] = stack.enter_context(postgres_database())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="essx-fuzz-service-")))
        service = stack.enter_context(child_service(tmp / "data", env, timeout=120))
        admin = {"Authorization": f"Bearer {service.admin_token('fuzz-admin@example.com', PASSWORD)}"}
        identities = {"prosumer": prosumer_token(service, admin), "admin": admin["Authorization"]}
        results = []
        for name, authorization in identities.items():
            results.append(summarise(name, run_schemathesis(service, authorization, out / name, args)))
            print(json.dumps(results[-1]), flush=True)
        (out / "service.log").write_bytes(service.log.read_bytes())
    total = {
        "database": "postgresql" if args.postgres else "sqlite",
        "test_cases": sum(r["test_cases"] for r in results),
        "operations_tested": max(r["operations_tested"] for r in results),
        "server_errors_unique": sum(r["server_errors_unique"] for r in results),
        "responses_5xx": sum(r["responses_5xx"] for r in results),
        "seconds": round(sum(r["seconds"] for r in results), 1),
        "schemathesis": results[0]["schemathesis"],
        "reports": str(out),
    }
    print(json.dumps(total), flush=True)
    return 1 if total["responses_5xx"] or total["server_errors_unique"] else 0


if __name__ == "__main__":
    os.environ.setdefault("ESSX_LOG_JSON", "false")
    sys.exit(main())
