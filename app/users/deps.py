"""Who is calling: the bearer token's user (`CurrentUser`), and the same restricted to admins (`AdminUser`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.api.deps import ContextDep, SessionDep, oauth2
from app.core.errors import Forbidden, Unauthorized
from app.users.models import Role, User
from app.users.service import user_for_access_token


def get_current_user(ctx: ContextDep, session: SessionDep, token: str | None = Depends(oauth2)) -> User:
    if not token:
        raise Unauthorized("missing bearer token")
    return user_for_access_token(session, ctx.settings, token)


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise Forbidden("this route is for admins")
    return user


AdminUser = Annotated[User, Depends(get_admin)]
