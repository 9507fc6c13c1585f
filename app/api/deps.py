"""Annotated dependencies that keep route signatures short: the context, the request's unit of work, the
client's address. Who is calling is a user's question: `app/users/deps.py` (`CurrentUser`, `AdminUser`)."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import OAuth2PasswordBearer
from sqlmodel import Session

from app.context import Context
from app.core.config import Settings

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in the thread pool,
# a hop that costs more than the function itself.
async def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]


async def get_settings_dep(ctx: ContextDep) -> Settings:
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


def _ip(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


async def client_address(request: Request, settings: SettingsDep) -> str:
    """The client's IP address: the direct peer's, unless the peer is one of our proxies
    (ESSX_TRUSTED_PROXIES): then the nearest address in X-Forwarded-For that is not one of them. A header
    from anyone else is ignored, so a client cannot pick the address it is throttled under."""
    peer = request.client.host if request.client else ""
    address = _ip(peer)
    if address is None:
        return peer[:64] or "unknown"

    def trusted(ip: IPv4Address | IPv6Address) -> bool:
        return any(ip in net for net in settings.trusted_proxies)

    if not trusted(address):
        return str(address)
    hops = [h for value in request.headers.getlist("x-forwarded-for") for h in value.split(",")]
    for hop in reversed(hops):  # each proxy appends the address it received from
        ip = _ip(hop)
        if ip is None:
            break  # nothing before a malformed entry can be vouched for
        address = ip
        if not trusted(ip):
            break
    return str(address)


ClientAddress = Annotated[str, Depends(client_address)]

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
