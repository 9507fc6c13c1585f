"""Annotated dependencies that keep route signatures short: the context, the request's unit of work, the
client's address. Who is calling is a user's question: `app/users/deps.py` (`CurrentUser`, `AdminUser`)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from sqlmodel import Session

from app.context import Context
from app.core.config import Settings

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in the thread pool,
# a hop that costs more than the function itself. The ones below read the context from the request
# rather than through `ContextDep`: FastAPI solves a sub-dependency again for each dependency that
# names it (its cached value saves only the call), and each solve costs more than the function.
def _context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def get_context(request: Request) -> Context:
    return _context(request)


ContextDep = Annotated[Context, Depends(get_context)]


async def get_settings_dep(request: Request) -> Settings:
    return _context(request).settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One unit of work per request: committed once when the route returns, rolled back on error.

    Its scope is "function": the commit runs before the response is sent (FastAPI's default scope,
    "request", ran it after, so a client, or the other worker, could act on an answer whose writes
    were not committed yet). Opening a session does no I/O, and most money routes commit themselves,
    so this runs on the event loop and takes the thread pool only for a commit or rollback that is
    left to do on the database (each hop to the pool costs more CPU than a small route)."""
    session = Session(_context(request).engine, expire_on_commit=False)
    try:
        yield session
        if session.in_transaction():
            if _ends_without_io(session):
                session.commit()
            else:
                await run_in_threadpool(session.commit)
    except BaseException:
        if session.in_transaction():
            if _ends_without_io(session):
                session.rollback()
            else:
                await run_in_threadpool(session.rollback)
        raise
    finally:
        session.close()  # holds no connection any more: nothing to do on the database


def _ends_without_io(session: Session) -> bool:
    """Whether ending the session's transaction leaves the database alone: nothing left to flush, and a
    SQLite connection without a transaction (Python's sqlite3 opens one before the first write only, so
    a request that only read has none, and its commit is bookkeeping). PostgreSQL always has a word."""
    if session.get_bind().dialect.name != "sqlite" or session.new or session.dirty or session.deleted:
        return False
    driver = session.connection().connection.dbapi_connection
    return isinstance(driver, sqlite3.Connection) and not driver.in_transaction


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _ip(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


async def client_address(request: Request) -> str:
    """The client's IP address: the direct peer's, unless the peer is one of our proxies
    (ESSX_TRUSTED_PROXIES): then the nearest address in X-Forwarded-For that is not one of them. A header
    from anyone else is ignored, so a client cannot pick the address it is throttled under."""
    settings = _context(request).settings
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
