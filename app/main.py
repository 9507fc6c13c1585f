"""create_app(): routers, the error handler, request ids, metrics, and the background workers.

However many API worker processes serve (``ESSX_WORKERS``), the background workers (the relayer's
broadcast/watch loop, the transfer batcher, the indexer, the market loop) run in one of them: the holder
of the ``essx-background`` database lease. The others serve requests only; when the holder stops or dies,
one of them takes the lease over after at most ``BACKGROUND_LEASE_SECONDS``.
"""

from __future__ import annotations

import gc
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import openapi
from app.coin import service as coin_service
from app.coin.grants import pay_pending_grant
from app.context import Context, build_context
from app.core.config import Settings, get_settings
from app.core.errors import AppError
from app.core.limits import RequestLimits
from app.core.logging import configure_logging, request_id_var
from app.indexer.service import IndexerWorker
from app.market import recording as market_recording
from app.market.service import sold_by_site
from app.market.worker import MarketWorker
from app.ops.router import LATENCY, REQUESTS
from app.ops.router import router as ops_router
from app.routes import documented_paths, include_api
from app.settlement import service as settlement_service
from app.sites.worker import CollectorWorker, install_hooks
from app.trading import agent as trading_agent
from app.transfers import batching
from app.transfers.batching import TransferBatcher
from app.web.router import router as web_router
from common.lease import Lease, LeaseLost
from common.worker import LeaseKeeper

log = logging.getLogger(__name__)
BACKGROUND_LEASE = "essx-background"
BACKGROUND_LEASE_SECONDS = 10.0
# Objects allocated (less freed) between two youngest-generation collections; Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000
SERIES_CACHED = 1024  # metric series a RequestContext keeps at hand
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
M = TypeVar("M", bound=MetricWrapperBase)


def _lease_lost(session: Session) -> None:
    raise LeaseLost(f"this process no longer holds the {BACKGROUND_LEASE!r} lease")


class BackgroundWorkers:
    """Runs the background workers while this process holds the background lease, and only then.

    Until it does (or after losing it) the process is a follower: its relayer is on standby (it prepares
    and stores transactions, the holder broadcasts and watches them) and authorisations leave their
    transfers to the holder's batcher, which polls the database. Everything the workers do is driven by
    database rows, so nothing is lost when they move to another process.
    """

    def __init__(self, ctx: Context, *, ttl_s: float = BACKGROUND_LEASE_SECONDS) -> None:
        self.ctx = ctx
        self.lease = Lease(ctx.engine, BACKGROUND_LEASE, ttl_s=ttl_s)
        self.keeper = LeaseKeeper(self.lease, self._lead, self._follow)
        self._workers: list[IndexerWorker | TransferBatcher | MarketWorker] = []

    @property
    def leading(self) -> bool:
        return self.keeper.leading

    def start(self) -> None:
        self.ctx.relayer.standby = True
        self.ctx.batcher_wake = threading.Event()  # no thread waits on it until we lead
        self.keeper.start()

    def stop(self) -> None:
        self.keeper.stop()
        # back to a context without background workers (a CLI, a test): relay and step inline, unfenced
        self.ctx.relayer.fence = None
        self.ctx.background_fence = None
        self.ctx.relayer.standby = False
        self.ctx.batcher_wake = None

    def _lead(self) -> None:
        ctx = self.ctx
        ctx.relayer.fence = self.lease.fence  # the worker's writes fail once another process leads
        ctx.background_fence = self.lease.fence
        ctx.relayer.start()  # also finishes whatever a previous process left in flight
        ctx.relayer.standby = False  # after start: no request thread steps inline beside the new thread
        self._workers = [
            IndexerWorker(ctx),
            TransferBatcher(ctx),
            # the market's pass, then settlement of what it recorded: composed here, so neither imports
            # the other (nor the automatic trader, which places its orders first)
            MarketWorker(
                ctx,
                before_pass=[trading_agent.run_if_due],
                after_pass=[settlement_service.settle_ready_slots],
            ),
        ]
        for worker in self._workers:
            worker.start()

    def _follow(self) -> None:
        ctx = self.ctx
        for worker in reversed(self._workers):
            worker.stop()
        self._workers = []
        ctx.relayer.standby = True
        ctx.relayer.stop()
        # A worker still finishing a slow pass (its stop timed out) must not commit beside the new leader:
        # the fences stay, and now always refuse.
        ctx.relayer.fence = _lease_lost
        ctx.background_fence = _lease_lost


def settle_heap() -> None:
    """Move what startup built (modules, mappers, schemas, the context) out of the garbage collector's
    sight and collect the young generation less often.

    The collector walked that long-lived heap on each full collection and ran a young one every 700
    allocations: 2.9% of a serving process's CPU under bench_transfers (0.83 of 28.6 s); after this
    0.2% (0.06 of 28.5 s)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def register_completions(ctx: Context) -> None:
    """Each domain registers who finishes its kinds of relayed transaction (wallet/purposes.py)."""
    completions = ctx.relayer.completions
    coin_service.register_completions(completions)
    batching.register_completions(completions, ctx)
    market_recording.register_completions(completions, ctx)
    settlement_service.register_completions(completions, ctx)
    install_hooks(ctx)  # anchors and reward mints, whichever process prepared them


def create_app(
    settings: Settings | None = None, ctx: Context | None = None, *, workers: bool = True
) -> FastAPI:
    settings = settings or (ctx.settings if ctx else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = ctx or build_context(settings)
        context.on_wallet_added = pay_pending_grant
        register_completions(context)
        app.state.ctx = context
        background = BackgroundWorkers(context) if workers else None
        if background is not None:
            background.start()
        # The collector is its own process in production (`essx collector`); `essx run` enables it here.
        # It has a lease of its own, so it may run in every API worker process.
        collector = (
            CollectorWorker(context, sold_by_site=sold_by_site)
            if workers and context.settings.collector_enabled
            else None
        )
        if collector is not None:
            collector.start()
        if ctx is None and workers:  # a serving process (`essx run`), not a test's app beside others
            settle_heap()
        try:
            yield
        finally:
            if collector is not None:
                collector.stop()
            if background is not None:
                background.stop()
            context.relayer.stop()
            if ctx is None:
                context.close()

    app = FastAPI(
        title="ESSX",
        description="Community energy exchange on Kaia: energy coin, wallets, ESS metering and a local market.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by app/web/router.py from vendored assets, so /docs works offline
        redoc_url=None,  # ReDoc would need another bundle; Swagger UI covers it
        # No OpenTelemetry: our metrics are Prometheus' (/metrics). Left on, FastAPI asked the global
        # OpenTelemetry providers on every request whether one had been configured.
        telemetry=NO_TELEMETRY,
    )
    if ctx is not None:
        app.state.ctx = ctx
    install_error_handlers(app)
    install_middleware(app, settings)
    openapi.install(app, documented_paths())
    app.include_router(ops_router)
    include_api(app)
    app.include_router(web_router)  # the dashboard at / (after the API, so it never shadows a route)
    return app


def create_worker_app() -> FastAPI:
    """The app of one API worker process (`essx run` with ESSX_WORKERS > 1): settings from the
    environment, which the parent process prepared."""
    settings = get_settings()
    configure_logging(settings.log_json)
    return create_app(settings)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": exc.name, "detail": exc.detail},
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"error": "ValidationError", "detail": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed"}.get(
            exc.status_code, "HTTPError"
        )
        return JSONResponse(
            status_code=exc.status_code, content={"error": name, "detail": exc.detail}, headers=exc.headers
        )

    @app.exception_handler(OperationalError)
    async def database_busy(_request: Request, exc: OperationalError) -> JSONResponse:
        if "database is locked" not in str(exc.orig):
            log.exception("database error")
            return JSONResponse(
                status_code=500, content={"error": "InternalError", "detail": "database error"}
            )
        # SQLite has one writer at a time; the transaction was rolled back, nothing changed.
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": "1"},
            content={
                "error": "DatabaseBusy",
                "detail": "the embedded SQLite database is busy with other writes; retry (for many concurrent "
                "users run on PostgreSQL: ESSX_DATABASE_URL)",
            },
        )

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Never echo the exception text: it might carry something secret.
        log.exception("unhandled error")
        return JSONResponse(
            status_code=500,
            content={"error": "InternalError", "detail": "unexpected error; see the server log"},
        )


def install_middleware(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)


class RequestContext:
    """Request id (X-Request-ID, made up when absent) for the logs and the response, the metrics, and the
    request limits (app/core/limits.py) inside them: the id and the metrics see every answer, also the
    limits' refusals.

    One plain ASGI middleware: Starlette's `@app.middleware("http")` runs every request through an extra
    task and memory streams, which cost the event loop more than the rest of the routing; the limits are
    called directly rather than as a middleware of their own (one coroutine less per request)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limits = RequestLimits(app, max_body_bytes=max_body_bytes)
        # the metric series per (method, route[, status]): `labels()` takes a lock and builds them each time
        # (bounded: a client chooses the method)
        self._latency: dict[tuple[str, ...], Histogram] = {}
        self._requests: dict[tuple[str, ...], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = rid or secrets.token_hex(16)  # as random as uuid4().hex, at a quarter of its CPU
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        token = request_id_var.set(rid)
        start = time.perf_counter()
        try:
            await self.limits.serve_http(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
            self._observe(scope, status, time.perf_counter() - start)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"]
        path = getattr(scope.get("route"), "path", "unmatched")
        _series(self._latency, LATENCY, (method, path)).observe(seconds)
        _series(self._requests, REQUESTS, (method, path, str(status))).inc()


def _series(kept: dict[tuple[str, ...], M], metric: M, labels: tuple[str, ...]) -> M:
    """The metric's series for these labels, kept at hand (bounded: a client chooses the method)."""
    series = kept.get(labels)
    if series is None:
        series = metric.labels(*labels)
        if len(kept) < SERIES_CACHED:
            kept[labels] = series
    return series
