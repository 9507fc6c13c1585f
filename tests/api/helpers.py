"""Small helpers for API tests: accounts and tokens through the public routes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.context import Context
from app.users.models import Role, UserStatus
from app.users.service import create_user

PASSWORD = "correct horse battery"


def make_admin(ctx: Context, email: str = "admin@example.com") -> None:
    with Session(ctx.engine) as s:
        u = create_user(s, email, PASSWORD, "Admin", Role.admin)
        u.status = UserStatus.approved
        s.add(u)
        s.commit()


def login(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def admin_headers(client: TestClient, ctx: Context) -> dict[str, str]:
    make_admin(ctx)
    return login(client, "admin@example.com")


def register(client: TestClient, role: str = "prosumer", email: str | None = None) -> dict:
    """A new account as /users/me shows it (registration answers alike for any email, so the new account
    is read after logging in)."""
    email = email or f"{uuid.uuid4().hex[:8]}@example.com"
    r = client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": "Kim", "role": role},
    )
    assert r.status_code == 202, r.text
    me = client.get("/api/v1/users/me", headers=login(client, email))
    assert me.status_code == 200, me.text
    return me.json()


def idem() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    """Runs the calls at once, each in its own thread, released together; returns their results."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results
