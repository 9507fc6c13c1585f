"""Who is calling: the bearer token's user (`CurrentUser`), and the same restricted to admins (`AdminUser`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from app.api.deps import SessionDep, oauth2
from app.context import Context
from app.core.errors import Forbidden, Unauthorized
from app.core.security import TokenClaims
from app.users.models import Role, User
from app.users.service import access_claims, user_for_claims

T = TypeVar("T")


async def bearer_token(request: Request, token: str | None = Depends(oauth2)) -> TokenClaims:
    """The request's bearer token, checked on the event loop (signature, kind, expiry; no database): a
    request without a valid one is answered 401 before its body is validated (a dependency that raises
    ends the request first). Whether its user and session still stand is read with the user. The
    context is read from the request, not through `ContextDep`: FastAPI solves a sub-dependency again
    for each dependency that names it, which costs more than this function (app/api/deps.py)."""
    if not token:
        raise Unauthorized("missing bearer token")
    ctx: Context = request.app.state.ctx
    return access_claims(ctx.settings, token)


# The checked token alone, for a hot route that reads its user in the same thread-pool call as the rest
# of its work (`as_user`): a `CurrentUser` dependency is a hop of its own.
BearerToken = Annotated[TokenClaims, Depends(bearer_token)]


def get_current_user(session: SessionDep, token: BearerToken) -> User:
    return user_for_claims(session, token)


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_admin(user: User) -> User:
    if user.role != Role.admin:
        raise Forbidden("this route is for admins")
    return user


async def get_admin(user: CurrentUser) -> User:
    return require_admin(user)


AdminUser = Annotated[User, Depends(get_admin)]


async def as_user(
    session: Session, token: TokenClaims, work: Callable[[User], T], *, admin: bool = False
) -> T:
    """`work(user)` with the token's user (an admin, with `admin`), both in one thread-pool call."""

    def call() -> T:
        user = user_for_claims(session, token)
        return work(require_admin(user) if admin else user)

    return await run_in_threadpool(call)
