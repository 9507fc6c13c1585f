from __future__ import annotations

from fastapi.testclient import TestClient

from app.context import Context
from tests.api.helpers import PASSWORD, admin_headers, login, register


def test_register_login_me_and_refresh_rotation(client: TestClient) -> None:
    user = register(client, "consumer", "Lee@Example.com")
    assert user["email"] == "lee@example.com" and user["status"] == "approved" and "password_hash" not in user
    r = client.post("/api/v1/auth/token", data={"username": "lee@example.com", "password": PASSWORD})
    assert r.status_code == 200
    pair = r.json()
    assert pair["token_type"] == "bearer"
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.json()["id"] == user["id"]
    # The refresh token works once; using it again ends the whole family.
    r2 = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r2.status_code == 200
    again = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 401 and again.json()["error"] == "Unauthorized"
    newer = client.post("/api/v1/auth/refresh", json={"refresh_token": r2.json()["refresh_token"]})
    assert newer.status_code == 401
    # An access token is not a refresh token.
    wrong = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["access_token"]})
    assert wrong.status_code == 401


def test_duplicate_email_and_bad_registration(client: TestClient) -> None:
    register(client, "consumer", "dup@example.com")
    r = client.post(
        "/api/v1/auth/register",
        json={"email": "DUP@example.com", "password": PASSWORD, "display_name": "x", "role": "consumer"},
    )
    assert r.status_code == 202 and r.json()["email"] == "dup@example.com"  # as for a new email
    for bad in (
        {"email": "not-an-email", "password": PASSWORD, "display_name": "x", "role": "consumer"},
        {"email": "a@example.com", "password": "short", "display_name": "x", "role": "consumer"},
        {"email": "a@example.com", "password": PASSWORD, "display_name": "x", "role": "admin"},
    ):
        r = client.post("/api/v1/auth/register", json=bad)
        assert r.status_code == 422 and r.json()["error"] == "ValidationError"


def test_login_throttled_after_repeated_failures(client: TestClient) -> None:
    register(client, "consumer", "t@example.com")
    for _ in range(4):  # three free failures, then the fourth starts the back-off
        r = client.post(
            "/api/v1/auth/token", data={"username": "t@example.com", "password": "wrong-password"}
        )
        assert r.status_code == 401
    r = client.post("/api/v1/auth/token", data={"username": "t@example.com", "password": PASSWORD})
    assert r.status_code == 429 and "try again" in r.json()["detail"]


def test_unknown_user_gets_the_same_answer_as_a_wrong_password(client: TestClient) -> None:
    r = client.post("/api/v1/auth/token", data={"username": "nobody@example.com", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["detail"] == "wrong email or password"


def test_prosumer_needs_approval_and_only_admins_approve(client: TestClient, ctx: Context) -> None:
    prosumer = register(client, "prosumer", "p@example.com")
    assert prosumer["status"] == "pending"
    own = login(client, "p@example.com")
    r = client.post(f"/api/v1/admin/users/{prosumer['id']}/approve", headers=own)
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    admin = admin_headers(client, ctx)
    r = client.post(f"/api/v1/admin/users/{prosumer['id']}/approve", headers=admin)
    assert r.status_code == 200 and r.json()["user"]["status"] == "approved"
    assert client.post(f"/api/v1/admin/users/{prosumer['id']}/approve", headers=admin).status_code == 409
    assert client.post("/api/v1/admin/users/99999/approve", headers=admin).status_code == 404
    audit = client.get("/api/v1/admin/audit", headers=admin).json()
    assert audit["chain_intact"] and audit["items"][0]["action"] == "user.approve"


def test_missing_or_bad_token(client: TestClient) -> None:
    assert client.get("/api/v1/users/me").status_code == 401
    r = client.get("/api/v1/users/me", headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized", "detail": "invalid token"}
