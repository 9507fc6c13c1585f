"""Helpers for site tests: prosumers that may register sites, and the sites they register."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.context import Context
from app.users.models import User, UserStatus
from tests.api.helpers import login, register
from wallet.localchain import free_port


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


_handed_out: set[int] = set()


def unused_port() -> int:
    """A free port this process has not handed out before: the kernel may give a released port again, and
    two sites on one host and port are one endpoint (409)."""
    while (port := free_port()) in _handed_out:
        pass
    _handed_out.add(port)
    return port


def site(host: str = "127.0.0.1", port: int | None = None, **kw: object) -> dict[str, object]:
    """POST /sites' body for a 3 kW PV site without a battery (on a port of its own unless told); `kw`
    changes or adds fields."""
    return {
        "name": "roof",
        "host": host,
        "port": port or unused_port(),
        "pv_nameplate_w": 3000,
        "battery_capacity_wh": 0,
    } | kw
