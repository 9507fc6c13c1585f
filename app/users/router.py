"""Registration, login, token refresh, the current user, and the admin's list of users (approval mints a
grant: app/coin/router.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, status

from app.api.deps import ClientAddress, SessionDep, SettingsDep, oauth2
from app.users import service
from app.users.deps import AdminUser, CurrentUser
from app.users.schemas import (
    LoginForm,
    LogoutRequest,
    PasswordChange,
    RefreshRequest,
    RegisterAccepted,
    TokenPair,
    UserPublic,
    UserRegister,
)

router = APIRouter(tags=["auth"])
admin_router = APIRouter(prefix="/admin/users", tags=["admin"])


@router.post(
    "/auth/register",
    response_model=RegisterAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Create an account (the answer never tells whether the email already had one)",
)
def register(data: UserRegister, session: SessionDep) -> RegisterAccepted:
    service.register(session, data)
    return RegisterAccepted(email=service.normalise_email(data.email))


@router.post("/auth/token", response_model=TokenPair, summary="Log in (OAuth2 password form)")
def login(
    form: Annotated[LoginForm, Form()], client: ClientAddress, session: SessionDep, settings: SettingsDep
) -> TokenPair:
    user = service.authenticate(session, settings, form.username, form.password, client)
    return service.issue_tokens(session, settings, user)


@router.post("/auth/refresh", response_model=TokenPair, summary="Swap a refresh token for a new pair")
def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    return service.refresh_tokens(session, settings, body.refresh_token)


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End this session: the refresh token in the body, or else the bearer access token's session",
)
def logout(
    session: SessionDep,
    settings: SettingsDep,
    body: LogoutRequest | None = None,
    token: str | None = Depends(oauth2),
) -> None:
    service.logout(session, settings, body.refresh_token if body else None, token)


@router.post(
    "/auth/password",
    response_model=TokenPair,
    summary="Change the password: ends every session of the account and returns a new one",
)
def change_password(
    body: PasswordChange, user: CurrentUser, client: ClientAddress, session: SessionDep, settings: SettingsDep
) -> TokenPair:
    return service.change_password(session, settings, user, body.old_password, body.new_password, client)


@router.get("/users/me", summary="The current user", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@admin_router.get("", summary="Users, optionally by status (admin)", response_model=list[UserPublic])
def list_users(
    session: SessionDep, _admin: AdminUser, status: Annotated[str | None, Query(max_length=16)] = None
) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in service.list_users(session, status)]
