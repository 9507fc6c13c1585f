"""Inputs the review turned into 500s get a 4xx with a clear JSON error, on SQLite and on PostgreSQL.

Ids beyond PostgreSQL's integer (2^31) and beyond 64 bits, times in year 1 and 9999 (the slot arithmetic
overflowed), times without a zone, NUL characters and over-long text (PostgreSQL refuses both), and a
stream cursor of 2^63.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from app.context import Context
from tests.api.helpers import PASSWORD, admin_headers, idem, login, register
from tests.api.wallet_helpers import user_with_custodial_wallet

BIG = [2**31, 2**63, 2**64 + 1, 10**30]


def _is_clear_4xx(r, error: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    if error is not None:
        assert body["error"] == error, body


@pytest.mark.parametrize("big", BIG)
def test_ids_beyond_the_database_integer_are_refused(client: TestClient, ctx: Context, big: int) -> None:
    admin = admin_headers(client, ctx)
    _user, headers, address = user_with_custodial_wallet(client, "prosumer")
    for method, url, who in [
        ("GET", f"/api/v1/admin/coin/operations/{big}", admin),
        ("POST", f"/api/v1/admin/users/{big}/approve", admin),
        ("POST", f"/api/v1/admin/sites/{big}/disable", admin),
        ("POST", f"/api/v1/admin/sites/{big}/enable", admin),
        ("GET", f"/api/v1/admin/audit?before={big}", admin),
        ("GET", f"/api/v1/sites/{big}", headers),
        ("GET", f"/api/v1/sites/{big}/readings", headers),
        ("GET", f"/api/v1/sites/{big}/faults", headers),
        ("GET", f"/api/v1/sites/{big}/events", headers),
        ("GET", f"/api/v1/sites/{big}/slots", headers),
        ("GET", f"/api/v1/sites/{big}/supply?slot_start=0", headers),
        ("GET", f"/api/v1/sites/{big}/slots/0/proof", headers),
        ("GET", f"/api/v1/accounts/{address}/transfers?before_block={big}", headers),
        ("GET", f"/api/v1/stream?once=true&last_event_id={big}", headers),
    ]:
        _is_clear_4xx(client.request(method, url, headers=who), "ValidationError")
    r = client.get("/api/v1/stream?once=true", headers={**headers, "Last-Event-ID": str(big)})
    _is_clear_4xx(r, "ValidationError")
    slot = "2030-01-01T00:00:00Z"
    for field in ("site_id", "counterpart_id"):
        body = {"side": "buy", "slot_start": slot, "quantity_wh": 100, "limit_price": "200", field: big}
        _is_clear_4xx(
            client.post("/api/v1/orders", json=body, headers={**headers, **idem()}), "ValidationError"
        )
    site = {"name": "x", "host": "127.0.0.1", "pv_nameplate_w": 1, "battery_capacity_wh": 0, "owner_id": big}
    _is_clear_4xx(client.post("/api/v1/sites", json=site, headers=admin), "ValidationError")


def test_the_largest_id_is_a_plain_not_found(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    r = client.get(f"/api/v1/admin/coin/operations/{2**31 - 1}", headers=admin)
    assert r.status_code == 404 and r.json()["error"] == "NotFound"


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+00:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:45:00+00:00",
        "9999-12-31T23:00:00-05:00",
    ],
)
def test_times_at_the_ends_of_the_calendar_are_refused(client: TestClient, ctx: Context, when: str) -> None:
    admin = admin_headers(client, ctx)
    _user, headers, _address = user_with_custodial_wallet(client, "prosumer")
    order = {"side": "buy", "slot_start": when, "quantity_wh": 100, "limit_price": "200"}
    _is_clear_4xx(client.post("/api/v1/orders", json=order, headers={**headers, **idem()}), "ValidationError")
    for url, params, who in [
        ("/api/v1/market/book", {"slot_start": when}, headers),
        ("/api/v1/market/price", {"slot_start": when, "side": "buy"}, headers),
        ("/api/v1/orders", {"slot_start": when}, headers),
        ("/api/v1/trades", {"slot_start": when, "since": when}, headers),
        ("/api/v1/admin/market/summary", {"from": when, "to": when}, admin),
        ("/api/v1/ledger/slots", {"from": when}, {}),
        ("/api/v1/sites/1/readings", {"from": when}, headers),
        ("/api/v1/sites/1/slots", {"to": when}, headers),
    ]:
        _is_clear_4xx(client.get(url, params=params, headers=who), "ValidationError")
    r = client.post(
        f"/api/v1/admin/slots/{when}/settle", json={"rule": "measured", "reason": "test"}, headers=admin
    )
    _is_clear_4xx(r, "ValidationError")
    for path_time in ("/api/v1/ledger/slots/", "/api/v1/sites/1/slots/"):
        suffix = "/proof" if "sites" in path_time else ""
        _is_clear_4xx(client.get(f"{path_time}{when}{suffix}", headers=headers))


def test_unix_seconds_at_the_ends_are_refused_where_a_slot_is_a_string(client: TestClient) -> None:
    for value in ("-62135596801", "253402300800", str(2**63), "-" + "9" * 30):
        _is_clear_4xx(client.get(f"/api/v1/ledger/slots/{value}"))


def test_times_without_a_zone_are_refused_like_elsewhere(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    naive = "2030-01-01T00:00:00"
    r = client.get("/api/v1/admin/market/summary", params={"from": naive, "to": naive}, headers=admin)
    _is_clear_4xx(r, "ValidationError")
    assert "timezone" in str(r.json()["detail"])
    _is_clear_4xx(client.get("/api/v1/ledger/slots", params={"from": naive}), "ValidationError")
    _is_clear_4xx(client.get("/api/v1/ledger/slots", params={"to": naive}), "ValidationError")
    aware = datetime(2030, 1, 1, tzinfo=UTC).isoformat()
    assert client.get("/api/v1/ledger/slots", params={"from": aware}).status_code == 200


def test_over_long_text_is_refused_before_the_database(client: TestClient) -> None:
    long_email = "a" * 310 + "@example.com"
    r = client.post(
        "/api/v1/auth/register",
        json={"email": long_email, "password": PASSWORD, "display_name": "Kim", "role": "prosumer"},
    )
    _is_clear_4xx(r)
    r = client.post(
        "/api/v1/auth/register",
        json={
            "email": "kim@example.com",
            "password": PASSWORD,
            "display_name": "K" * 101,
            "role": "prosumer",
        },
    )
    _is_clear_4xx(r, "ValidationError")
    for username in ("u" * 400, "u" * 5000 + "@example.com"):
        _is_clear_4xx(client.post("/api/v1/auth/token", data={"username": username, "password": "x" * 20}))
    user = register(client)
    headers = login(client, user["email"])
    r = client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 100_000})
    _is_clear_4xx(r)
    r = client.post("/api/v1/relay/kaia", json={"raw_transaction": "0x" + "00" * 70_000}, headers=headers)
    _is_clear_4xx(r, "ValidationError")
    r = client.get("/api/v1/orders", params={"status": "s" * 1000}, headers=headers)
    _is_clear_4xx(r, "ValidationError")
    r = client.post(
        "/api/v1/transfers", json={"to": 1, "amount": "1"}, headers={**headers, "Idempotency-Key": "k" * 201}
    )
    _is_clear_4xx(r)


def test_nul_in_text_is_refused_before_the_database(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    user = register(client)
    headers = login(client, user["email"])
    for method, url, kwargs in [
        (
            "POST",
            "/api/v1/auth/register",
            {
                "json": {
                    "email": "n@example.com",
                    "password": PASSWORD,
                    "display_name": "a\x00",
                    "role": "prosumer",
                }
            },
        ),
        (
            "POST",
            "/api/v1/transfers",
            {"json": {"to": 1, "amount": "1", "memo": "\x00"}, "headers": {**headers, **idem()}},
        ),
        (
            "POST",
            "/api/v1/admin/coin/mint",
            {"json": {"to": 1, "amount": "1", "memo": "m\x00"}, "headers": {**admin, **idem()}},
        ),
        ("GET", "/api/v1/orders?status=open%00", {"headers": headers}),
        ("GET", "/api/v1/transfers/ab%00cd", {"headers": headers}),
        ("POST", "/api/v1/auth/token", {"data": {"username": "\x00", "password": "x"}}),
    ]:
        _is_clear_4xx(client.request(method, url, **kwargs), "InvalidText")
