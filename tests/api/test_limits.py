"""Request limits (app/core/limits.py): body size, JSON depth, NUL characters, before anything parses.

The middleware's rules on a small app of its own, then on the real app, whose routes parse JSON before
they authenticate anyone. The real `essx run` process meets the hostile bodies in test_limits_service.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.core.limits import MAX_JSON_DEPTH, RequestLimits, json_depth, json_text_problem

LIMIT = 4096


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"length": len(body), "disconnected": await request.is_disconnected()})


@pytest.fixture
def small() -> Iterator[TestClient]:
    app = Starlette(routes=[Route("/echo", echo, methods=["POST", "GET"])])
    with TestClient(RequestLimits(app, max_body_bytes=LIMIT)) as c:
        yield c


def test_a_body_within_the_limit_reaches_the_app_unchanged(small: TestClient) -> None:
    r = small.post("/echo", content=b"x" * LIMIT, headers={"Content-Type": "text/plain"})
    assert r.status_code == 200 and r.json() == {"length": LIMIT, "disconnected": False}


def test_a_declared_length_over_the_limit_is_refused_before_reading(small: TestClient) -> None:
    r = small.post("/echo", content=b"x" * (LIMIT + 1), headers={"Content-Type": "text/plain"})
    assert r.status_code == 413
    assert r.json()["error"] == "BodyTooLarge" and "ESSX_MAX_BODY_BYTES" in r.json()["detail"]
    assert r.headers["connection"] == "close"


def test_a_chunked_body_is_counted_while_it_streams() -> None:
    """No length is declared: the middleware stops reading once the limit is passed (the client could go
    on for ever), and never calls the app."""
    received: list[int] = []
    sent: list[dict] = []

    async def endless_body() -> dict:
        received.append(1)
        return {"type": "http.request", "body": b"y" * 1000, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("the app must not see this request")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "query_string": b"",
        "headers": [(b"transfer-encoding", b"chunked"), (b"content-type", b"application/json")],
    }
    asyncio.run(RequestLimits(app, max_body_bytes=LIMIT)(scope, endless_body, send))  # type: ignore[arg-type]
    assert len(received) == LIMIT // 1000 + 1
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"] == "BodyTooLarge"


def test_a_chunked_body_within_the_limit_is_passed_on_whole(small: TestClient) -> None:
    r = small.post(
        "/echo", content=iter([b"[1,", b"2,", b"3]"]), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200 and r.json()["length"] == 7


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": [2]}]}', 4),
        (b'["[[[[[[[[[[", "{{{{{{{{"]', 1),  # brackets in strings do not count
        (b'["\\"[[[[[[", [[1]]]', 3),  # nor after an escaped quote
        (b'["\\\\", [[1]]]', 3),  # an escaped backslash ends before the quote
        (b"[" * 100_000, 100_000),  # unbalanced: as deep as a parser would go
        (b"[]" * 1000, 1),
        (b'["unterminated [[[[[[', 1),
    ],
)
def test_json_depth_counts_nesting_outside_strings(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


def test_a_body_one_level_too_deep_is_refused_and_one_less_passes(small: TestClient) -> None:
    deep_ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    too_deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    assert (
        small.post("/echo", content=deep_ok, headers={"Content-Type": "application/json"}).status_code == 200
    )
    r = small.post("/echo", content=too_deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "NestingTooDeep"
    # FastAPI parses a body without a content type as JSON: so is it checked
    assert small.post("/echo", content=too_deep).status_code == 422
    # a body FastAPI does not parse as JSON is left to the route
    assert small.post("/echo", content=too_deep, headers={"Content-Type": "text/plain"}).status_code == 200


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"a": "x\\u0000y"}', "NUL"),
        ('{"a\\u0000": 1}', "NUL"),  # keys too
        ('{"a": "\\\\u0000"}', None),  # an escaped backslash, then the letters u0000
        ('{"a": "\\\\\\u0000"}', "NUL"),
        ('{"a": "\\ud83d\\ude00"}', None),  # a surrogate pair is one character
        ('{"a": "\\uD83D\\uDE00"}', None),
        ('{"a": "\\ud83d"}', "surrogate"),
        ('{"a": "\\ude00x"}', "surrogate"),
        ('{"a": "\\ud83dx\\ude00"}', "surrogate"),
        ('{"a": "\\u00e9 \\u4e2d"}', None),
    ],
)
def test_json_strings_that_cannot_be_stored_are_found(text: str, problem: str | None) -> None:
    found = json_text_problem(text.encode())
    assert (found is None) if problem is None else (found is not None and problem in found)
    if problem is None:
        json.loads(text)  # the cases that pass are valid JSON


def test_nul_is_refused_in_json_form_path_and_query(small: TestClient) -> None:
    r = small.post("/echo", content=b'{"a": "\\u0000"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidText"
    r = small.post("/echo", data={"username": "a\x00b"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidText"
    assert small.get("/echo?q=a%00b").status_code == 422
    assert small.get("/echo%00").status_code == 422
    assert small.get("/echo?q=a%2500b").status_code == 200  # the text "%00", not a NUL


def test_the_real_app_refuses_deep_and_large_bodies_before_parsing(client: TestClient) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    r = client.post("/api/v1/auth/register", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "NestingTooDeep"
    assert r.headers["x-request-id"]  # refused inside the request context: logged and counted
    big = b'{"email": "' + b"a" * 1_100_000 + b'"}'
    r = client.post("/api/v1/auth/register", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "BodyTooLarge"
    r = client.post(
        "/api/v1/auth/register",
        json={"email": "a@example.com", "password": "pass\x00word1", "display_name": "x", "role": "prosumer"},
    )
    assert r.status_code == 422 and r.json()["error"] == "InvalidText"
    r = client.post("/api/v1/auth/token", data={"username": "a\x00@example.com", "password": "x"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidText"
    assert client.get("/healthz").status_code == 200


def test_the_body_limit_is_a_setting(settings, ctx) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    settings.max_body_bytes = 2048
    with TestClient(create_app(settings, ctx=ctx, workers=False)) as c:
        r = c.post("/api/v1/auth/register", content=b" " * 2049, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "2048" in r.json()["detail"]


# A fresh interpreter per case, forked from one that has already imported the third-party libraries which do
# not import py_ecc (about 1 s of the 2.6 s of CPU a cold `python -c` spends on these imports). The server
# refuses to start if any of them brought in py_ecc, an Ethereum library or our own code, so each case still
# imports py_ecc and everything of ours for the first time, in the order it names.
IMPORT_SERVER = """
import importlib, os, sys, traceback
import fastapi, sqlalchemy, sqlmodel, pydantic, pydantic_settings, starlette, prometheus_client, httpx, typer
import eth_utils, eth_abi, eth_typing, hexbytes
ours = ("py_ecc", "web3", "eth_account", "eth_keyfile", "app", "wallet", "common", "contracts", "ess_collector")
early = sorted(m for m in sys.modules if m.split(".")[0] in ours)
assert not early, early
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            before = sys.getrecursionlimit()
            for name in line.split():
                importlib.import_module(name)
            assert "py_ecc" in sys.modules
            print(before, sys.getrecursionlimit(), flush=True)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            print("failed", flush=True)
            os._exit(1)
    os.waitpid(pid, 0)
"""


@pytest.fixture(scope="module")
def fresh_imports() -> Iterator[Callable[[list[str]], list[str]]]:
    """Imports modules, in order, in a fresh interpreter; what it prints: the recursion limit before and
    after (or "failed", with the traceback on stderr)."""
    server = subprocess.Popen(
        [sys.executable, "-c", IMPORT_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdin is not None and server.stdout is not None

    def imports(modules: list[str]) -> list[str]:
        server.stdin.write(" ".join(modules) + "\n")  # type: ignore[union-attr]
        server.stdin.flush()  # type: ignore[union-attr]
        return server.stdout.readline().split()  # type: ignore[union-attr]

    try:
        yield imports
    finally:
        server.stdin.close()
        assert server.wait(timeout=60) == 0


@pytest.mark.parametrize(
    "first", ["app.main", "app.cli", "wallet.chain", "ess_collector.collector", "contracts.deploy"]
)
def test_importing_our_code_leaves_the_recursion_limit_alone(
    first: str, fresh_imports: Callable[[list[str]], list[str]]
) -> None:
    """py_ecc raises it to 100,000 on import; then a deep enough recursion kills the process (SIGSEGV)."""
    assert fresh_imports([first, "app.main", "web3", "eth_account", "eth_keyfile"]) == ["1000", "1000"]


def test_the_test_process_runs_with_the_normal_recursion_limit() -> None:
    """The suite runs like the service: whatever it exercises works without the raised limit."""
    assert "py_ecc" in sys.modules
    assert sys.getrecursionlimit() < 10_000
