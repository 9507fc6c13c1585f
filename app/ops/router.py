"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import text
from sqlmodel import Session

from app.api.deps import ContextDep
from app.core.money import format_amount, parse_amount

router = APIRouter(tags=["operations"])

REQUESTS = Counter("essx_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("essx_http_request_seconds", "HTTP request latency", ["method", "route"])
RELAYER_BALANCE = Gauge("essx_relayer_balance_kei", "Native balance of the relayer account")
CHAIN_HEAD = Gauge("essx_chain_head_block", "Latest block seen by /readyz")


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database, chain, contracts and the relayer's balance",
    responses={503: {"description": "Not ready: the checks say which part failed"}},
)
def readyz(ctx: ContextDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    ok = True
    try:
        with Session(ctx.engine) as s:
            s.exec(text("SELECT 1"))  # type: ignore[call-overload]
        checks["database"] = "ok"
    except Exception as exc:
        ok, checks["database"] = False, f"error: {type(exc).__name__}"
    try:
        chain_id = int(ctx.w3.eth.chain_id)
        checks["chain"] = "ok"
        checks["chain_id"] = chain_id
        if chain_id != ctx.settings.expected_chain_id:
            ok, checks["chain"] = (
                False,
                f"wrong chain id {chain_id}, expected {ctx.settings.expected_chain_id}",
            )
        head = int(ctx.w3.eth.block_number)
        CHAIN_HEAD.set(head)
        checks["block_number"] = head
        code = ctx.w3.eth.get_code(ctx.coin.address)
        checks["contracts"] = "ok" if len(code) > 0 else "missing"
        ok = ok and len(code) > 0
        balance = ctx.relayer.balance()
        RELAYER_BALANCE.set(balance)
        minimum = parse_amount(ctx.settings.relayer_min_balance, allow_zero=True)
        checks["relayer"] = {"address": ctx.relayer.address, "balance": format_amount(balance)}
        if balance < minimum:
            checks["relayer"]["alert"] = f"balance below {ctx.settings.relayer_min_balance}: top it up"
            ok = False
    except Exception as exc:
        ok, checks["chain"] = False, f"unreachable: {type(exc).__name__}"
    if ctx.settings.demo_sites_failure:  # `essx run` could not start its simulated sites
        ok, checks["demo_sites"] = False, ctx.settings.demo_sites_failure
    return JSONResponse(
        status_code=200 if ok else 503, content={"status": "ok" if ok else "unavailable", **checks}
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
def metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
