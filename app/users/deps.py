"""Who is calling: the bearer token's user (`CurrentUser`), and the same restricted to admins (`AdminUser`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from app.api.deps import SessionDep, oauth2
from app.context import Context
from app.core.db import session_scope
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
    return _checked(request.app.state.ctx, token)


def _checked(ctx: Context, token: str | None) -> TokenClaims:
    if not token:
        raise Unauthorized("missing bearer token")
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


@dataclass(frozen=True, slots=True)
class Caller:
    """The context and the checked bearer token of a request."""

    ctx: Context
    token: TokenClaims


async def caller(request: Request, token: str | None = Depends(oauth2)) -> Caller:
    """The context and the bearer token (checked as `bearer_token` does: a 401 before the body is
    validated) in one dependency, for the hottest routes (`in_unit_of_work`). FastAPI's solving costs
    more per dependency than any of these functions: with the context, the session and the token as
    three, solving them was about a quarter of FastAPI's handling of a transfer request (py-spy)."""
    ctx: Context = request.app.state.ctx
    return Caller(ctx, _checked(ctx, token))


# The context and the checked token of a route that opens its own unit of work (`in_unit_of_work`).
CallerDep = Annotated[Caller, Depends(caller)]


async def in_unit_of_work(who: Caller, work: Callable[[Session, User], T]) -> T:
    """`work(session, user)` in one thread-pool call with the request's unit of work, which is opened,
    committed (or rolled back on error) and closed in the same call (`session_scope`), before the
    response is sent, as with `SessionDep`: one hop per request, and no generator dependency (FastAPI
    solves one through an exit stack of its own, more CPU than a route's statement)."""

    def call() -> T:
        with session_scope(who.ctx.engine) as session:
            return work(session, user_for_claims(session, who.token))

    return await run_in_threadpool(call)
