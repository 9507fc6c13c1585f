"""Mounts every domain's routes under /api/v1. Only app/main.py imports this module: it sits above every
domain, while `app/api` (deps, params, error responses) sits below them all."""

from fastapi import APIRouter

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

api_router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)  # every refusal: {"error", "detail"}
for r in (
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
):
    api_router.include_router(r)
