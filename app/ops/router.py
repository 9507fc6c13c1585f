"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from app.api.deps import ContextDep
from app.ops import service
from app.ops.schemas import Health, Readiness

router = APIRouter(tags=["operations"])

REQUESTS = Counter("essx_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("essx_http_request_seconds", "HTTP request latency", ["method", "route"])


@router.get("/healthz", summary="Liveness: the process answers", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: database, chain, contracts and the relayer's balance",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: the checks say which part failed"}},
)
def readyz(ctx: ContextDep) -> JSONResponse:
    ready = service.readiness(ctx)
    return JSONResponse(
        status_code=200 if ready.status == "ok" else 503, content=ready.model_dump(exclude_none=True)
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
def metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
