"""Registration, login, token refresh, the current user, and admin approval."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from app.api.deps import AdminUser, ContextDep, CurrentUser, SessionDep, SettingsDep
from app.api.params import RowId
from app.audit import service as audit
from app.coin.service import latest_hash
from app.users import service
from app.users.grants import pay_pending_grant
from app.users.schemas import ApproveResult, LoginForm, RefreshRequest, TokenPair, UserPublic, UserRegister
from app.wallets.service import active_wallet

router = APIRouter(tags=["auth"])
admin_router = APIRouter(prefix="/admin/users", tags=["admin"])


@router.post(
    "/auth/register",
    summary="Register as a prosumer or consumer",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
)
def register(data: UserRegister, session: SessionDep) -> UserPublic:
    return UserPublic.model_validate(service.register(session, data))


@router.post("/auth/token", summary="Log in: an access and a refresh token", response_model=TokenPair)
def login(
    form: Annotated[LoginForm, Depends()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
) -> TokenPair:
    client = request.client.host if request.client else "unknown"
    user = service.authenticate(session, settings, form.username, form.password, client)
    return service.issue_tokens(session, settings, user)


@router.post(
    "/auth/refresh", summary="Exchange a refresh token for a new token pair", response_model=TokenPair
)
def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    return service.refresh_tokens(session, settings, body.refresh_token)


@router.get("/users/me", summary="The current user", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@admin_router.get("", summary="Users, optionally by status (admin)", response_model=list[UserPublic])
def list_users(
    session: SessionDep, _admin: AdminUser, status: Annotated[str | None, Query(max_length=16)] = None
) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in service.list_users(session, status)]


@admin_router.post(
    "/{user_id}/approve",
    summary="Approve a user, minting the approval grant (admin)",
    response_model=ApproveResult,
)
def approve(user_id: RowId, ctx: ContextDep, session: SessionDep, admin: AdminUser) -> ApproveResult:
    user = service.get_user(session, user_id)
    service.approve(session, user, admin)
    grant = service.approval_grant(ctx.settings)
    grant_status = "none" if grant == 0 else "pending_wallet"
    grant_tx = None
    wallet = active_wallet(session, user.id or 0)
    if grant and wallet is not None:
        op = pay_pending_grant(ctx, session, user, wallet)
        if op is not None:
            grant_status, grant_tx = "minted", op.tx_id
    audit.record(
        session,
        admin,
        "user.approve",
        target=f"user:{user_id}",
        details={"grant": ctx.settings.approval_grant, "grant_status": grant_status},
    )
    session.flush()
    session.commit()
    ctx.relayer.kick()
    return ApproveResult(
        user=UserPublic.model_validate(user),
        grant=ctx.settings.approval_grant,
        grant_status=grant_status,
        grant_tx_hash=latest_hash(session, grant_tx) if grant_tx else None,
    )
