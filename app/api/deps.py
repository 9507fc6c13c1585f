"""Annotated dependencies that keep route signatures short."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import OAuth2PasswordBearer
from sqlmodel import Session

from app.context import Context
from app.core.config import Settings
from app.core.errors import Forbidden, Unauthorized
from app.core.security import decode_token
from app.models import Role, User

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]


def get_settings_dep(ctx: ContextDep) -> Settings:
    return ctx.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    """One unit of work per request: committed once when the route returns, rolled back on error."""
    with Session(ctx.engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]


def get_current_user(ctx: ContextDep, session: SessionDep, token: str | None = Depends(oauth2)) -> User:
    if not token:
        raise Unauthorized("missing bearer token")
    payload = decode_token(ctx.settings.secret("jwt_secret"), token, "access")
    user = session.get(User, int(payload["sub"]))
    if user is None or user.status == "disabled":
        raise Unauthorized("unknown or disabled user")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise Forbidden("this route is for admins")
    return user


AdminUser = Annotated[User, Depends(get_admin)]

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
