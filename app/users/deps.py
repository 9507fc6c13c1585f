"""Who is calling: the bearer token's user (`CurrentUser`), and the same restricted to admins (`AdminUser`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlmodel import Session

from app.api.deps import ContextDep, SessionDep, oauth2
from app.context import Context
from app.core.errors import Forbidden, Unauthorized
from app.users.models import Role, User
from app.users.service import user_for_access_token


def current_user(ctx: Context, session: Session, token: str | None) -> User:
    """The user of the request's bearer token (blocking: reads the database)."""
    if not token:
        raise Unauthorized("missing bearer token")
    return user_for_access_token(session, ctx.settings, token)


def get_current_user(ctx: ContextDep, session: SessionDep, token: str | None = Depends(oauth2)) -> User:
    return current_user(ctx, session, token)


CurrentUser = Annotated[User, Depends(get_current_user)]
# The bearer token alone, for a hot route that reads its user (`current_user`) in the same thread-pool
# call as the rest of its work: a `CurrentUser` dependency is a hop of its own.
BearerToken = Annotated[str | None, Depends(oauth2)]


def require_admin(user: User) -> User:
    if user.role != Role.admin:
        raise Forbidden("this route is for admins")
    return user


async def get_admin(user: CurrentUser) -> User:
    return require_admin(user)


AdminUser = Annotated[User, Depends(get_admin)]
