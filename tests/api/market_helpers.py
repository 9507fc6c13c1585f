"""Helpers for market and trading tests: sellers with a site and a charged battery, through the public API."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.context import Context
from common import clock
from ess_collector.models import SiteReading
from tests.api.helpers import idem, login, register
from tests.api.wallet_helpers import PIN
from wallet.localchain import free_port


def prosumer_with_site(client: TestClient, admin: dict[str, str]) -> tuple[dict, dict[str, str], int, str]:
    """An approved prosumer with a custodial wallet and a 5 kW / 10 kWh site (reserve 10 %) that nothing
    polls: (user, headers, site id, wallet address)."""
    user = register(client, "prosumer")
    client.post(f"/api/v1/admin/users/{user['id']}/approve", headers=admin)
    headers = login(client, user["email"])
    wallet = client.post("/api/v1/wallets", json={"pin": PIN}, headers=headers)
    assert wallet.status_code == 201, wallet.text
    site = client.post(
        "/api/v1/sites",
        json={
            "name": "roof",
            "host": "127.0.0.1",
            "port": free_port(),
            "pv_nameplate_w": 5000,
            "battery_capacity_wh": 10_000,
            "reserve_soc_pct": 10,
        },
        headers=headers,
    )
    assert site.status_code == 201, site.text
    return user, headers, site.json()["id"], wallet.json()["address"]


def charge_battery(ctx: Context, site_id: int) -> None:
    """A fresh reading: the battery holds 90 %, 8 kWh above its reserve, so the site may sell."""
    with Session(ctx.engine) as s:
        s.add(SiteReading(site_id=site_id, ts=clock.now(), quality="ok", soc_tenths=900, accepted=True))
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
