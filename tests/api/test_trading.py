"""Automatic trading on a real chain: the profile, its one-time authorisation, the agent's orders within
the daily limit, bad input, revocation (open orders cancelled, escrow released) and passes that crash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyotp
import pytest
from eth_account.messages import encode_typed_data
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.context import Context
from app.market import service as market
from app.market.matching.types import escrow_amount
from app.market.models import Order
from app.trading import agent
from app.trading.models import AgentOrder
from common import clock
from tests.api.helpers import admin_headers
from tests.api.market_helpers import charge_battery, prosumer_with_site, prosumer_with_wallet, site_body
from tests.api.wallet_helpers import PIN, fund, user_with_custodial_wallet, user_with_linked_wallet

COIN = 10**18


@pytest.fixture(autouse=True)
def midday(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent plans from the sites' clear-sky PV curve (local time UTC+9) and from the gate closures:
    energy time starts at 12:01 local, a minute into a slot, whatever hour the suite runs at. (At night the
    agent rightly sells less, and a pass near a gate closure reprices: the tests would depend on the hour.)
    The chain keeps its own time; escrow validity follows the chain's clock."""
    monkeypatch.setenv("ESSX_CLOCK_START", f"{datetime.now(UTC).date()}T03:01:00+00:00")


def _orders(ctx: Context, user_id: int) -> list[Order]:
    with Session(ctx.engine) as s:
        return list(s.exec(select(Order).where(col(Order.user_id) == user_id)))


def _profile(**over: Any) -> dict[str, Any]:
    return {"enabled": True, "reserve_pct": 20, "max_wh_per_slot": 2000, "daily_limit": "50", **over}


def test_bad_profiles_are_refused_and_change_nothing(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, site_id, address = prosumer_with_site(client, admin)
    fund(client, admin, address, "100")
    other = prosumer_with_site(client, admin)[2]
    floor, ceiling = market.rules(ctx).band(clock.now())
    cases = [
        (_profile(site_id=site_id, pin=PIN, sell_floor="1"), 422, "outside the market's price band"),
        (_profile(site_id=site_id, pin=PIN, buy_ceiling="100000"), 422, "outside the market's price band"),
        (_profile(site_id=site_id, pin=PIN, reserve_pct=101), 422, "less than or equal to 100"),
        (_profile(site_id=site_id, pin=PIN, reserve_pct=-1), 422, "greater than or equal to 0"),
        (_profile(site_id=site_id, pin=PIN, daily_limit="100.5"), 422, "above your balance 100"),
        (_profile(site_id=other, pin=PIN), 422, f"site {other} is not one of your sites"),
        (_profile(site_id=site_id), 422, "needs your wallet's pin"),
        (_profile(site_id=site_id, pin="999999"), 403, "wrong PIN"),
    ]
    for body, status, words in cases:
        r = client.put("/api/v1/trading/profile", json=body, headers=headers)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"] and words in str(r.json()["detail"]), r.text
    profile = client.get("/api/v1/trading/profile", headers=headers).json()
    assert profile["enabled"] is False and profile["version"] == 0 and profile["updated_at"] is None
    assert client.get("/api/v1/trading/activity", headers=headers).json()["items"] == []
    assert floor < ceiling


def test_agent_sells_from_the_forecast_and_buys_within_the_daily_limit(
    client: TestClient, ctx: Context
) -> None:
    admin = admin_headers(client, ctx)
    seller, s_headers, site_id, _ = prosumer_with_site(client, admin)
    charge_battery(ctx, site_id)
    buyer, b_headers, b_address = user_with_custodial_wallet(client)
    fund(client, admin, b_address, "100")
    r = client.put(
        "/api/v1/trading/profile",
        json=_profile(site_id=site_id, pin=PIN, reserve_pct=30, daily_limit="0"),
        headers=s_headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] and r.json()["authorized_by"] == "pin"
    r = client.put(
        "/api/v1/trading/profile",
        json=_profile(expected_use_wh=500, daily_limit="10", pin=PIN),
        headers=b_headers,
    )
    assert r.status_code == 200, r.text

    agent.run_pass(ctx)
    agent.run_pass(ctx)  # a second pass keeps what the first placed

    sells = [o for o in _orders(ctx, seller["id"]) if o.side == "sell"]
    assert sells and all(o.site_id == site_id and o.status in ("open", "filled") for o in sells)
    assert len({o.slot_start for o in sells}) == len(sells)  # one order per slot
    assert (
        sum(o.quantity_wh for o in sells) <= 10_000 * 60 // 100 + 4 * 1250
    )  # above the 30 % reserve, plus PV
    buys = [o for o in _orders(ctx, buyer["id"])]
    assert buys and all(o.side == "buy" for o in buys)
    committed = sum(
        o.escrow_amount if o.status in agent.LIVE else escrow_amount(o.filled_wh, o.limit_price) for o in buys
    )
    assert 0 < committed <= 10 * COIN  # the daily limit, across slots (a repriced order's release is free)
    activity = client.get("/api/v1/trading/activity", headers=b_headers).json()["items"]
    assert any(a["action"] == "placed" for a in activity)
    assert any(a["reason"] == "the daily spending limit is reached" for a in activity)
    profile = client.get("/api/v1/trading/profile", headers=b_headers).json()
    assert 0 < float(profile["spent_today"]) <= 10


def test_turning_the_agent_off_cancels_its_orders_and_releases_their_escrow(
    client: TestClient, ctx: Context
) -> None:
    admin = admin_headers(client, ctx)
    buyer, headers, address = user_with_custodial_wallet(client)
    fund(client, admin, address, "1000")
    body = _profile(expected_use_wh=200, daily_limit="100", pin=PIN)
    assert client.put("/api/v1/trading/profile", json=body, headers=headers).status_code == 200
    agent.run_pass(ctx)
    placed = _orders(ctx, buyer["id"])
    assert len(placed) == agent.AGENT_SLOTS, [
        a["reason"] for a in client.get("/api/v1/trading/activity", headers=headers).json()["items"]
    ]
    assert all(o.status == "open" and o.escrow_status == "authorized" for o in placed)
    # Nothing matched: nothing is locked on chain (escrow only for what matches, app/market/escrow.py),
    # but the authorised amounts stay reserved against the wallet's balance.
    assert ctx.coin.functions.balanceOf(address).call() == 1000 * COIN

    r = client.delete("/api/v1/trading/profile", headers=headers)
    assert r.status_code == 200 and r.json()["enabled"] is False
    ended = _orders(ctx, buyer["id"])
    assert all(o.status == "cancelled" and o.escrow_status == "unused" for o in ended), [
        (o.status, o.escrow_status) for o in ended
    ]
    assert ctx.coin.functions.balanceOf(address).call() == 1000 * COIN
    agent.run_pass(ctx)  # off: nothing new
    assert len(_orders(ctx, buyer["id"])) == agent.AGENT_SLOTS
    actions = [a["action"] for a in client.get("/api/v1/trading/activity", headers=headers).json()["items"]]
    assert actions.count("cancelled") == agent.AGENT_SLOTS and "disabled" in actions


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so no handler in the pass catches it."""


def test_a_pass_killed_after_placing_never_places_twice(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = admin_headers(client, ctx)
    seller, s_headers, site_id, _ = prosumer_with_site(client, admin)
    charge_battery(ctx, site_id)
    assert (
        client.put(
            "/api/v1/trading/profile",
            json=_profile(site_id=site_id, pin=PIN, daily_limit="0"),
            headers=s_headers,
        ).status_code
        == 200
    )
    real = market.place_for_agent
    calls = 0

    def dies_after_second(*args: Any, **kwargs: Any) -> Order:
        nonlocal calls
        calls += 1
        order = real(*args, **kwargs)  # committed with its link
        if calls == 2:
            raise Killed
        return order

    monkeypatch.setattr(market, "place_for_agent", dies_after_second)
    with pytest.raises(Killed):
        agent.run_pass(ctx)
    monkeypatch.setattr(market, "place_for_agent", real)
    agent.run_pass(ctx)
    agent.run_pass(ctx)
    orders = [o for o in _orders(ctx, seller["id"]) if o.status in ("open", "filled")]
    with Session(ctx.engine) as s:
        links = list(s.exec(select(AgentOrder).where(col(AgentOrder.user_id) == seller["id"])))
    assert orders and len(orders) == len({o.slot_start for o in orders})
    assert {link.order_id for link in links} == {o.id for o in _orders(ctx, seller["id"])}
    assert len([link for link in links if link.live_key]) == len(orders)


def test_enabling_checks_the_wallets_factors_as_a_spend_does(client: TestClient) -> None:
    """Enabling goes through the spending authoriser's checks (verify): with a one-time code app enrolled
    the code is needed too, and a code is used once; a linked wallet's refusals stay ProfileNotAuthorized.
    Nothing changes on a refusal."""
    _u, headers, _address = user_with_custodial_wallet(client)
    totp = pyotp.TOTP(client.post("/api/v1/auth/totp/setup", headers=headers).json()["secret"])
    code = totp.now()
    assert client.post("/api/v1/auth/totp/verify", json={"code": code}, headers=headers).status_code == 200
    body = _profile(expected_use_wh=300, daily_limit="0", pin=PIN)
    r = client.put("/api/v1/trading/profile", json=body, headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "OtpRequired", r.text
    r = client.put("/api/v1/trading/profile", json={**body, "otp": code}, headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "WrongOtp", r.text  # the enrolment used it
    assert client.get("/api/v1/trading/profile", headers=headers).json()["version"] == 0

    _u, headers, _account = user_with_linked_wallet(client)
    body = _profile(expected_use_wh=300, daily_limit="0")
    for extra, words in [
        ({}, "a signature over POST /api/v1/trading/profile/typed-data"),
        ({"signature": "0x12"}, "malformed"),
    ]:
        r = client.put("/api/v1/trading/profile", json={**body, **extra}, headers=headers)
        assert r.status_code == 422 and r.json()["error"] == "ProfileNotAuthorized", r.text
        assert words in r.json()["detail"], r.text
    assert client.get("/api/v1/trading/profile", headers=headers).json()["version"] == 0


def test_a_linked_wallet_enables_the_agent_with_a_signature(client: TestClient, ctx: Context) -> None:
    _u, headers, account = user_with_linked_wallet(client)
    settings = _profile(expected_use_wh=300, daily_limit="0")
    typed = client.post("/api/v1/trading/profile/typed-data", json=settings, headers=headers)
    assert typed.status_code == 200, typed.text
    signature = account.sign_message(
        encode_typed_data(full_message=typed.json()["typed_data"])
    ).signature.hex()
    wrong = client.put(
        "/api/v1/trading/profile",
        json={**settings, "daily_limit": "0", "max_wh_per_slot": 3000, "signature": signature},
        headers=headers,
    )
    assert wrong.status_code == 422 and wrong.json()["error"] == "ProfileNotAuthorized"
    assert f"recovers to {account.address}" not in wrong.json()["detail"]
    assert f"not your wallet {account.address}" in wrong.json()["detail"]
    r = client.put("/api/v1/trading/profile", json={**settings, "signature": signature}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] and r.json()["authorized_by"] == "signature" and r.json()["version"] == 1
    agent.run_pass(ctx)
    reasons = {a["reason"] for a in client.get("/api/v1/trading/activity", headers=headers).json()["items"]}
    assert any("linked wallet signs each escrow" in why for why in reasons)


def test_the_agent_sells_within_the_sites_declared_power_and_keeps_its_orders(
    client: TestClient, ctx: Context
) -> None:
    admin = admin_headers(client, ctx)
    seller, headers, _ = prosumer_with_wallet(client, admin)
    site = site_body(max_charge_w=2000, max_discharge_w=2000)
    bad = client.post("/api/v1/sites", json={**site, "max_discharge_w": -1}, headers=headers)
    assert bad.status_code == 422 and "max_discharge_w" in bad.text
    r = client.post("/api/v1/sites", json=site, headers=headers)
    assert r.status_code == 201 and r.json()["max_discharge_w"] == 2000, r.text
    site_id = r.json()["id"]
    charge_battery(ctx, site_id, pv_w=0, load_w=300)  # a full battery, no sun, a household using 300 W
    body = _profile(site_id=site_id, pin=PIN, reserve_pct=10, max_wh_per_slot=100_000, daily_limit="0")
    assert client.put("/api/v1/trading/profile", json=body, headers=headers).status_code == 200

    agent.run_pass(ctx)
    sells = [o for o in _orders(ctx, seller["id"]) if o.side == "sell"]
    r_ = market.rules(ctx)
    most = 2000 * r_.slot_minutes // 60  # the battery's power over a slot
    least_load = 500 * r_.slot_minutes // 60  # the supply estimate's default household load
    assert len(sells) == agent.AGENT_SLOTS
    assert all(0 < o.quantity_wh <= most - least_load for o in sells), [o.quantity_wh for o in sells]
    # a second pass with nothing changed keeps every order (no cancel and re-place)
    agent.run_pass(ctx)
    again = [o for o in _orders(ctx, seller["id"]) if o.side == "sell"]
    assert {o.id for o in again} == {o.id for o in sells} and all(o.status == "open" for o in again)
