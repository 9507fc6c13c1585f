"""Helpers for site tests: prosumers that may register sites."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.context import Context
from app.users.models import User, UserStatus
from tests.api.helpers import login, register


def prosumer(client: TestClient, ctx: Context, *, approved: bool = True) -> tuple[dict[str, str], int]:
    """A prosumer's auth headers and id; approved (as an admin would) unless told otherwise."""
    user = register(client)
    if approved:
        with Session(ctx.engine) as s:
            row = s.get(User, user["id"])
            assert row is not None
            row.status = UserStatus.approved
            s.add(row)
            s.commit()
    return login(client, user["email"]), user["id"]
