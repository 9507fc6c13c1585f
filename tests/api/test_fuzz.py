"""A bounded schemathesis run over the whole OpenAPI document, in process, on SQLite and PostgreSQL.

Every operation is called with generated valid and invalid data (hypothesis, derandomized so the suite is
repeatable), each case as an approved prosumer with a funded custodial wallet and as an admin. It fails on
any 5xx, and on an answer the document does not describe (status, content type, body shape).

The large run (tens of thousands of cases against a real `essx run`) is `python -m scripts.fuzz_api`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi._hypothesis import can_negate_path_parameters
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import Engine
from web3 import Web3

from app.context import Context, build_context
from app.main import create_app
from contracts.deploy import Deployment
from tests.api.helpers import admin_headers, login, register
from tests.api.wallet_helpers import PIN, fund
from tests.service_setup import empty_tables, service_settings

# Per operation, identity and database: about a minute in all on 2 cores. `make test-fast` asks for fewer
# (ESSX_FUZZ_EXAMPLES): the same operations and checks, a smaller sample; `make test` runs the full one.
EXAMPLES = int(os.environ.get("ESSX_FUZZ_EXAMPLES", "8"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# An endless answer cannot be checked: the event stream is asked to send what there is and close.
FIXED: dict[str, dict[str, Any]] = {"GET /api/v1/stream": {"query": {"once": "true"}}}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_ctx(
    tmp_path_factory: pytest.TempPathFactory,
    engine: Engine,
    anvil_url: str,
    deployments_dir: Path,
    db_url: str,
    deployment: Deployment,
    w3: Web3,
) -> Iterator[Context]:
    """One context for all the generated cases (a fresh one per case would cost more than the cases);
    the chain and the tables are put back afterwards, as the per-test fixtures do."""
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    settings_ = service_settings(tmp_path_factory.mktemp("fuzz"), db_url, anvil_url, deployments_dir)
    ctx = build_context(settings_, engine=engine)
    try:
        yield ctx
    finally:
        ctx.relayer.stop()
        w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
        empty_tables(engine)


@pytest.fixture(scope="module")
def fuzz_app(fuzz_ctx: Context) -> FastAPI:
    return create_app(ctx=fuzz_ctx, workers=False)


@pytest.fixture(scope="module")
def identities(fuzz_app: FastAPI, fuzz_ctx: Context) -> dict[str, dict[str, str]]:
    with TestClient(fuzz_app) as client:
        admin = admin_headers(client, fuzz_ctx)
        user = register(client, "prosumer")
        assert client.post(f"/api/v1/admin/users/{user['id']}/approve", headers=admin).status_code == 200
        prosumer = login(client, user["email"])
        wallet = client.post("/api/v1/wallets", json={"pin": PIN}, headers=prosumer)
        assert wallet.status_code == 201, wallet.text
        fund(client, admin, wallet.json()["address"], "100")
    return {"prosumer": prosumer, "admin": admin}


def fuzz_every_operation(app: FastAPI, identities: dict[str, dict[str, str]]) -> list[str]:
    """Runs every operation of the document with positive and negative data, each case as every identity
    (the cases are drawn once: drawing costs more than calling); the failures, one line each (the first
    failing case of each operation and mode, shrunk by hypothesis, and whom it failed for).

    Hypothesis is driven here rather than by schemathesis' pytest plugin: its lazy schemas
    (`schemathesis.pytest.from_fixture`, needed for a per-database app) fail on pytest 9.2, and one test
    that lists every failing operation reads better than 58 subtests."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50
    calling = {"as": ""}  # whom the last case was sent as
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if not _nothing_to_negate(operation):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode, **FIXED.get(operation.label, {})))
            def run(case: Any) -> None:
                for who, headers in identities.items():
                    calling["as"] = who
                    case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                pass  # nothing to make invalid (no parameters, or only a free-form path segment)
            except Exception as exc:  # a failed check: keep going, report all at the end
                failures.append(f"{operation.label} ({mode.value}) as {calling['as']}: {_first_line(exc)}")
    return failures


def _nothing_to_negate(operation: Any) -> bool:
    """Whether every negative case of `operation` would be rejected: no body, query, header or cookie
    parameter, and only path values schemathesis cannot make invalid (a free-form string always passes).
    Hypothesis would draw ~460 rejected cases before giving up (Unsatisfiable), about 0.6 s per operation."""
    if operation.body:
        return False
    for location in (ParameterLocation.QUERY, ParameterLocation.HEADER, ParameterLocation.COOKIE):
        if operation.get_parameter_set(location).schema["properties"]:
            return False
    return not can_negate_path_parameters(operation)


def _first_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # hypothesis wraps flaky failures
        exc = exc.exceptions[0]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " / ".join(lines[:3]) or type(exc).__name__


def test_a_prosumer_and_an_admin_get_no_server_error_and_no_undocumented_answer(
    fuzz_app: FastAPI, identities: dict[str, dict[str, str]]
) -> None:
    failures = fuzz_every_operation(fuzz_app, identities)
    assert not failures, "\n".join(failures)
