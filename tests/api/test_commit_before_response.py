"""A request's writes are committed before its response leaves: a client (or the other worker behind the
same port) that acts on an answer must find what the answer reports. FastAPI's default dependency scope
ran `get_session`'s commit after the response was sent."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.api import deps
from app.context import Context
from app.main import create_app
from app.users.models import User
from tests.api.helpers import PASSWORD, login, register


def test_a_write_is_committed_when_its_response_starts(ctx: Context) -> None:
    app = create_app(ctx=ctx)
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    seen: list[bool] = []

    async def watched(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_and_look(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and scope["path"].endswith("/auth/register"):
                # What another connection sees at the moment the answer starts to leave.
                with Session(ctx.engine) as s:
                    seen.append(s.exec(select(User.id).where(col(User.email) == email)).first() is not None)
            await send(message)

        await app(scope, receive, send_and_look)

    with TestClient(watched) as client:
        r = client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": "Kim", "role": "prosumer"},
        )
    assert r.status_code == 202, r.text
    assert seen == [True]


def test_only_a_session_with_something_to_end_takes_the_thread_pool(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a request that only read has no transaction open in the driver: its commit is done on the
    event loop, without a hop to the pool (which costs more than a small route). A write still commits
    in the pool before the answer leaves (above); PostgreSQL always commits there."""
    hops: list[str] = []
    pooled = deps.run_in_threadpool

    async def counted(fn: Callable[[], Any]) -> Any:
        hops.append(fn.__name__)
        return await pooled(fn)

    monkeypatch.setattr(deps, "run_in_threadpool", counted)
    headers = login(client, register(client, "consumer")["email"])
    hops.clear()
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    assert hops == ([] if ctx.engine.dialect.name == "sqlite" else ["commit"])
    hops.clear()
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": PASSWORD, "display_name": "Kim", "role": "consumer"}
    assert client.post("/api/v1/auth/register", json=body).status_code == 202
    assert hops == ["commit"]
    with Session(ctx.engine) as s:
        assert s.exec(select(User.id).where(col(User.email) == email)).first() is not None
