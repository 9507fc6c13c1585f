"""Mounts every domain's routes under /api/v1."""

from fastapi import APIRouter

from app.audit.router import router as audit_router
from app.coin.router import admin_router as coin_admin_router
from app.coin.router import router as coin_router
from app.users.router import admin_router as users_admin_router
from app.users.router import router as users_router

api_router = APIRouter(prefix="/api/v1")
for r in (users_router, users_admin_router, coin_router, coin_admin_router, audit_router):
    api_router.include_router(r)
