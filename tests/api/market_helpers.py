"""Helpers for market and trading tests: sellers with a site and a charged battery, through the public API."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.context import Context
from common import clock
from ess_collector.models import SiteReading
from tests.api.helpers import idem, login, register
from tests.api.site_helpers import unused_port
from tests.api.wallet_helpers import PIN


def site_body(**site_over: object) -> dict[str, object]:
    """POST /sites' body for a 5 kW / 10 kWh site (reserve 10 %) that nothing polls; `site_over` changes
    or adds fields."""
    return {
        "name": "roof",
        "host": "127.0.0.1",
        "port": unused_port(),
        "pv_nameplate_w": 5000,
        "battery_capacity_wh": 10_000,
        "reserve_soc_pct": 10,
    } | site_over


def prosumer_with_wallet(client: TestClient, admin: dict[str, str]) -> tuple[dict, dict[str, str], str]:
    """An approved prosumer with a custodial wallet: (user, headers, wallet address)."""
    user = register(client, "prosumer")
    client.post(f"/api/v1/admin/users/{user['id']}/approve", headers=admin)
    headers = login(client, user["email"])
    wallet = client.post("/api/v1/wallets", json={"pin": PIN}, headers=headers)
    assert wallet.status_code == 201, wallet.text
    return user, headers, wallet.json()["address"]


def prosumer_with_site(
    client: TestClient, admin: dict[str, str], **site_over: object
) -> tuple[dict, dict[str, str], int, str]:
    """An approved prosumer with a custodial wallet and a site as `site_body(**site_over)` builds it:
    (user, headers, site id, wallet address)."""
    user, headers, address = prosumer_with_wallet(client, admin)
    site = client.post("/api/v1/sites", json=site_body(**site_over), headers=headers)
    assert site.status_code == 201, site.text
    return user, headers, site.json()["id"], address


def charge_battery(ctx: Context, site_id: int, **reading_over: Any) -> None:
    """A fresh reading: the battery holds 90 %, 8 kWh above its reserve, so the site may sell;
    `reading_over` sets other fields of the reading (say `pv_w`, `load_w`)."""
    reading = {"site_id": site_id, "ts": clock.now(), "quality": "ok", "soc_tenths": 900, "accepted": True}
    with Session(ctx.engine) as s:
        s.add(SiteReading(**(reading | reading_over)))
        s.commit()


def charged_seller(
    client: TestClient, ctx: Context, admin: dict[str, str]
) -> tuple[dict, dict[str, str], int]:
    """A prosumer whose site has a charged battery: (user, headers, site id)."""
    user, headers, site_id, _address = prosumer_with_site(client, admin)
    charge_battery(ctx, site_id)
    return user, headers, site_id


def sell_order(
    client: TestClient, headers: dict[str, str], slot: str, quantity_wh: int, price: str, site_id: int
) -> httpx.Response:
    """POST /orders: a sell from `site_id` (the answer, unchecked: some tests expect a refusal)."""
    return client.post(
        "/api/v1/orders",
        json={
            "side": "sell",
            "slot_start": slot,
            "quantity_wh": quantity_wh,
            "limit_price": price,
            "site_id": site_id,
        },
        headers={**headers, **idem()},
    )
