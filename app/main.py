"""create_app(): routers, the error handler, request ids, metrics, and the background workers."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.router import api_router
from app.coin.service import on_tx_final
from app.context import Context, build_context
from app.core.config import Settings, get_settings
from app.core.errors import AppError
from app.core.logging import request_id_var
from app.indexer.service import IndexerWorker
from app.market.recording import make_hook as market_hook
from app.market.worker import MarketWorker
from app.ops.router import LATENCY, REQUESTS
from app.ops.router import router as ops_router
from app.settlement.service import make_hook as settlement_hook
from app.sites.worker import CollectorWorker, install_hooks
from app.transfers.batching import TransferBatcher, make_batch_hook
from app.web.router import router as web_router

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, ctx: Context | None = None, *, workers: bool = True
) -> FastAPI:
    settings = settings or (ctx.settings if ctx else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = ctx or build_context(settings)
        context.relayer.on_final.append(on_tx_final)
        context.relayer.on_final.append(make_batch_hook(context))
        context.relayer.on_final.append(market_hook(context))
        context.relayer.on_final.append(settlement_hook(context))
        install_hooks(context)  # anchors and reward mints, whichever process prepared them
        app.state.ctx = context
        indexer = IndexerWorker(context)
        batcher = TransferBatcher(context)
        market = MarketWorker(context)
        if workers:
            context.relayer.start()  # also finishes whatever a previous process left in flight
            indexer.start()
            batcher.start()
            market.start()
        # The collector is its own process in production (`essx collector`); `essx run` enables it here.
        collector = CollectorWorker(context) if workers and context.settings.collector_enabled else None
        if collector is not None:
            collector.start()
        try:
            yield
        finally:
            if collector is not None:
                collector.stop()
            market.stop()
            batcher.stop()
            indexer.stop()
            context.relayer.stop()
            if ctx is None:
                context.close()

    app = FastAPI(
        title="ESSX",
        description="Community energy exchange on Kaia: energy coin, wallets, ESS metering and a local market.",
        version="0.1.0",
        lifespan=lifespan,
    )
    if ctx is not None:
        app.state.ctx = ctx
    install_error_handlers(app)
    install_middleware(app)
    app.include_router(ops_router)
    app.include_router(api_router)
    app.include_router(web_router)  # the dashboard at / (after the API, so it never shadows a route)
    return app


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.name, "detail": exc.detail})

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


def install_middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def request_context(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        rid = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            request_id_var.reset(token)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(request.method, path).observe(time.perf_counter() - start)
        REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        response.headers["X-Request-ID"] = rid
        return response
