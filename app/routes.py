"""Mounts every domain's routes under /api/v1. Only app/main.py imports this module: it sits above every
domain, while `app/api` (deps, params, error responses) sits below them all."""

from fastapi import APIRouter, FastAPI

from app.api.openapi import ERROR_RESPONSES
from app.audit.router import router as audit_router
from app.coin.router import admin_router as coin_admin_router
from app.coin.router import approval_router
from app.coin.router import router as coin_router
from app.events.router import router as events_router
from app.market.router import router as market_router
from app.relay.router import router as relay_router
from app.settlement.router import admin_router as settlement_admin_router
from app.settlement.router import router as settlement_router
from app.sites.router import admin_router as sites_admin_router
from app.sites.router import ledger_router
from app.sites.router import router as sites_router
from app.trading.router import router as trading_router
from app.transfers.router import router as transfers_router
from app.users.router import admin_router as users_admin_router
from app.users.router import router as users_router
from app.wallets.router import router as wallets_router
from app.wallets.router import totp_router

API_PREFIX = "/api/v1"
# In the order the API is documented (/openapi.json, /docs).
DOMAIN_ROUTERS: tuple[APIRouter, ...] = (
    users_router,
    users_admin_router,
    approval_router,
    totp_router,
    wallets_router,
    transfers_router,
    relay_router,
    coin_router,
    coin_admin_router,
    audit_router,
    events_router,
    settlement_router,
    market_router,
    trading_router,
    settlement_admin_router,
    sites_router,
    sites_admin_router,
    ledger_router,
)


# Tried first: the routers of the money routes. FastAPI tries the routers one after another and passing
# over one costs about 6 us (it matches each of its routes), so a request to the market's router, the
# 13th, paid about 70 us before its route was found. No route of one domain router matches a path of
# another's (tests/api/test_routes.py), so the order decides only the cost.
HOT_ROUTERS: tuple[APIRouter, ...] = (transfers_router, market_router, coin_admin_router, wallets_router)


def include_api(app: FastAPI) -> None:
    """Each domain's router straight on the app, under /api/v1, the money routes' first.

    Not through one /api/v1 router that includes them all: FastAPI matches an included router by matching
    its routes, and matches again on the way down, so each level of nesting multiplied the routing work of
    every request (`GET /coin` spent more CPU in routing than in the rest of the app)."""
    later = (r for r in DOMAIN_ROUTERS if all(r is not hot for hot in HOT_ROUTERS))
    for router in (*HOT_ROUTERS, *later):
        # every refusal: {"error", "detail"}
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)


def documented_paths() -> list[str]:
    """The API's paths in their documented order (DOMAIN_ROUTERS'), whatever order they are tried in."""
    return list(dict.fromkeys(API_PREFIX + route.path for r in DOMAIN_ROUTERS for route in r.routes))  # type: ignore[attr-defined]
