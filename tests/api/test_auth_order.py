"""Who may call is answered before what was sent: a request without a valid bearer token (missing,
forged, expired, of the wrong kind) gets 401, and a
non-admin minting gets 403 for any well-formed JSON body (an admin's bad body still gets its 422). A
missing body or malformed JSON is still 422 first: FastAPI reads the body before any dependency runs."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from app.context import Context
from app.core.security import create_token
from tests.api.helpers import PASSWORD, admin_headers, idem, login, register
from tests.api.test_coin import ALICE

BAD_MINTS: list[object] = [{"to": ALICE, "amount": 5}, {}, [], "x"]


def test_no_bearer_token_and_a_bad_body_is_401(client: TestClient) -> None:
    for path, body in (
        ("/api/v1/transfers", {"to": [1], "amount": 5}),
        ("/api/v1/transfers/abc/authorize", {"pin": "not a pin"}),
        ("/api/v1/admin/coin/mint", {"to": ALICE, "amount": 5}),
        ("/api/v1/admin/coin/burn", {"amount": 5}),
    ):
        for auth in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
            r = client.post(path, json=body, headers={**auth, **idem()})
            assert r.status_code == 401, (path, auth, r.text)
            assert r.json() == {"error": "Unauthorized", "detail": "missing bearer token"}
    assert client.get("/api/v1/users/me").status_code == 401


def test_a_bad_bearer_token_and_a_bad_body_is_401(client: TestClient, ctx: Context) -> None:
    secret = ctx.settings.secret("jwt_secret")
    refresh = client.post(
        "/api/v1/auth/token", data={"username": register(client, "consumer")["email"], "password": PASSWORD}
    ).json()["refresh_token"]
    tokens = {
        "not a token": ("x.y.z", "invalid token"),
        "forged": (
            create_token("another secret" * 3, 1, "access", timedelta(minutes=5), family="f", epoch=0)[0],
            "invalid token",
        ),
        "expired": (
            create_token(secret, 1, "access", timedelta(seconds=-60), family="f", epoch=0)[0],
            "token expired",
        ),
        "a refresh token": (refresh, "not an access token"),
    }
    for path, body in (
        ("/api/v1/transfers", {"to": [1], "amount": 5}),
        ("/api/v1/transfers/abc/authorize", {"pin": "not a pin"}),
        ("/api/v1/orders", {"side": "sideways"}),
        ("/api/v1/orders/abc/authorize", {"pin": [1]}),
        ("/api/v1/admin/coin/mint", {"to": ALICE, "amount": 5}),
    ):
        for what, (token, detail) in tokens.items():
            r = client.post(path, json=body, headers={"Authorization": f"Bearer {token}", **idem()})
            assert r.status_code == 401, (path, what, r.text)
            assert r.json() == {"error": "Unauthorized", "detail": detail}, (path, what)


def test_a_non_admin_minting_a_bad_body_is_403(client: TestClient, ctx: Context) -> None:
    user = login(client, register(client, "consumer")["email"])
    admin = admin_headers(client, ctx)
    for body in BAD_MINTS:
        r = client.post("/api/v1/admin/coin/mint", json=body, headers={**user, **idem()})
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", (body, r.text)
        r = client.post("/api/v1/admin/coin/mint", json=body, headers={**admin, **idem()})
        assert r.status_code == 422 and r.json()["error"] == "ValidationError", (body, r.text)
    r = client.post("/api/v1/admin/coin/mint", json=BAD_MINTS[0], headers={**admin, **idem()})
    assert r.json()["detail"] == [
        {"loc": ["body", "amount"], "msg": "Input should be a valid string", "type": "string_type"}
    ]
    assert ctx.coin.functions.totalSupply().call() == 0
