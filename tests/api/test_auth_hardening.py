"""Issue 12: attempt limits that hold under parallel requests, tokens that end, logins that cannot lock the
owner out, and a registration that tells nobody whether an email exists. SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from ipaddress import ip_network
from typing import Any

import jwt
import pyotp
import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from app.context import Context
from app.core.security import hash_secret, utcnow
from app.users import service as users_service
from app.users import throttle
from app.users.models import LoginThrottle, User
from app.wallets import pins
from app.wallets import service as wallets_service
from app.wallets.models import Wallet
from tests.api.helpers import PASSWORD, admin_headers, idem, login, register
from tests.api.wallet_helpers import PIN, fund, passing_the_counter, user_with_custodial_wallet

OWNER, ATTACKER, PROXY = "203.0.113.9", "198.51.100.7", "10.0.0.2"


def parallel(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """n calls at once: every thread waits at a barrier, then all fire together."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    """Wraps module.name (the real function still runs) and records its calls."""
    calls: list[Any] = []
    real = getattr(module, name)

    def spy(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(module, name, spy)
    return calls


def from_client(client: TestClient, address: str) -> TestClient:
    """Another client of the same running app, seen as connecting from `address`."""
    return TestClient(client.app, client=(address, 40000))


# -- 1. PIN lockout under parallel guesses -----------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["keyed", "argon2"])
def test_parallel_wrong_pins_check_at_most_the_limit(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    user, headers, _ = user_with_custodial_wallet(client)
    if legacy:  # an Argon2id hash: reserved before it is checked, so at most 5 are ever checked
        with Session(ctx.engine) as s:
            s.exec(update(Wallet).where(col(Wallet.user_id) == user["id"]).values(pin_hash=hash_secret(PIN)))  # type: ignore[call-overload]
            s.commit()
        checked = counting(monkeypatch, pins, "verify_pin")
    else:  # a keyed hash, checked first: the counter's one statement decides which guesses get an answer
        checked = passing_the_counter(monkeypatch)

    def guess(i: int) -> int:
        body = {"old_pin": f"{900000 + i}", "new_pin": "654321"}
        return client.post("/api/v1/wallets/me/pin", json=body, headers=headers).status_code

    codes = parallel(32, guess)
    assert set(codes) <= {403, 423} and codes.count(403) <= 4, codes
    assert len(checked) <= wallets_service.PIN_MAX_FAILURES  # at most 5 of the 32 got past the counter
    with Session(ctx.engine) as s:
        wallet = s.exec(select(Wallet).where(col(Wallet.user_id) == user["id"])).one()
        assert wallet.locked_until is not None and wallet.locked_until > utcnow()
    right = {"old_pin": PIN, "new_pin": "654321"}
    r = client.post("/api/v1/wallets/me/pin", json=right, headers=headers)
    assert r.status_code == 423 and r.json()["error"] == "WalletLocked"  # even the right PIN waits
    with Session(ctx.engine) as s:  # the lock ends
        s.exec(update(Wallet).where(col(Wallet.id) == wallet.id).values(locked_until=utcnow()))  # type: ignore[call-overload]
        s.commit()
    assert client.post("/api/v1/wallets/me/pin", json=right, headers=headers).status_code == 204


def test_a_right_pin_starts_the_count_again(client: TestClient) -> None:
    _u, headers, _ = user_with_custodial_wallet(client)
    wrong = {"old_pin": "999999", "new_pin": "654321"}
    for left in (4, 3, 2):
        r = client.post("/api/v1/wallets/me/pin", json=wrong, headers=headers)
        assert r.status_code == 403 and f"{left} attempts left" in r.json()["detail"]
    same = {"old_pin": PIN, "new_pin": PIN}
    assert client.post("/api/v1/wallets/me/pin", json=same, headers=headers).status_code == 204
    r = client.post("/api/v1/wallets/me/pin", json=wrong, headers=headers)
    assert r.status_code == 403 and "4 attempts left" in r.json()["detail"]


# -- 2. one-time codes --------------------------------------------------------------------------------------


def _enrol(client: TestClient, headers: dict[str, str]) -> pyotp.TOTP:
    return pyotp.TOTP(client.post("/api/v1/auth/totp/setup", headers=headers).json()["secret"])


def _wrong_codes(totp: pyotp.TOTP, n: int) -> list[str]:
    step = int(time.time()) // totp.interval
    valid = {totp.generate_otp(step + d) for d in (-2, -1, 0, 1, 2)}
    return [c for c in (f"{i:06d}" for i in range(100, 200)) if c not in valid][:n]


def test_one_code_used_in_parallel_is_accepted_once(client: TestClient) -> None:
    _u, headers, _ = user_with_custodial_wallet(client)
    totp = _enrol(client, headers)
    code = totp.now()
    codes = parallel(
        10,
        lambda _i: client.post("/api/v1/auth/totp/verify", json={"code": code}, headers=headers).status_code,
    )
    assert codes.count(200) == 1 and set(codes) <= {200, 403, 423}, codes


def test_wrong_codes_lock_enrolment(client: TestClient) -> None:
    _u, headers, _ = user_with_custodial_wallet(client)
    totp = _enrol(client, headers)
    answers = [
        client.post("/api/v1/auth/totp/verify", json={"code": c}, headers=headers)
        for c in _wrong_codes(totp, 25)
    ]
    assert [a.status_code for a in answers[:4]] == [403] * 4
    assert {a.status_code for a in answers[4:]} == {423} and answers[-1].json()["error"] == "OtpLocked"
    r = client.post("/api/v1/auth/totp/verify", json={"code": totp.now()}, headers=headers)
    assert r.status_code == 423


def test_wrong_codes_lock_spending(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    totp = _enrol(client, headers)
    step = int(time.time()) // totp.interval
    enrolled = client.post(
        "/api/v1/auth/totp/verify", json={"code": totp.generate_otp(step - 1)}, headers=headers
    )
    assert enrolled.status_code == 200
    t = client.post(
        "/api/v1/transfers",
        json={"to": Account.create().address, "amount": "0.5"},
        headers={**headers, **idem()},
    ).json()
    statuses = [
        client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": PIN, "otp": c}, headers=headers)
        for c in _wrong_codes(totp, 25)
    ]
    assert {s.status_code for s in statuses[4:]} == {423}
    r = client.post(
        f"/api/v1/transfers/{t['id']}/authorize", json={"pin": PIN, "otp": totp.now()}, headers=headers
    )
    assert r.status_code == 423 and r.json()["error"] == "OtpLocked"
    assert (
        client.get(f"/api/v1/transfers/{t['id']}", headers=headers).json()["status"]
        == "pending_authorization"
    )


# -- 3. tokens -------------------------------------------------------------------------------------------------


def _forge(ctx: Context, **claims: Any) -> dict[str, str]:
    now = utcnow()
    base = {
        "sub": "1",
        "type": "access",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": "j",
        "fam": "f",
    }
    base["ep"] = 0
    payload = {k: v for k, v in {**base, **claims}.items() if v is not None}
    token = jwt.encode(payload, ctx.settings.secret("jwt_secret"), algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def test_tokens_need_every_claim_and_a_sane_subject(client: TestClient, ctx: Context) -> None:
    me = register(client, "consumer")
    good = _forge(ctx, sub=str(me["id"]))
    assert client.get("/api/v1/users/me", headers=good).status_code == 200  # the forgery is well made
    for claims in (
        {"exp": None},  # would never expire
        {"sub": None},
        {"jti": None},
        {"fam": None},
        {"sub": "abc"},
        {"sub": "٣"},
        {"sub": "-1"},
        {"sub": str(2**31)},
        {"sub": "9" * 40},
        {"sub": me["id"]},  # a number, not a string
        {"ep": "0"},
        {"type": "refresh"},
    ):
        merged = {"sub": str(me["id"]), **claims}
        for path in ("/api/v1/users/me", "/api/v1/stream?once=true"):
            r = client.get(path, headers=_forge(ctx, **merged))
            assert r.status_code == 401 and r.json()["error"] == "Unauthorized", (claims, r.text)


def test_logout_ends_that_session_at_once(client: TestClient) -> None:
    me = register(client, "consumer")
    first = client.post("/api/v1/auth/token", data={"username": me["email"], "password": PASSWORD}).json()
    other = client.post("/api/v1/auth/token", data={"username": me["email"], "password": PASSWORD}).json()
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    assert client.get("/api/v1/users/me", headers=bearer).status_code == 200
    assert (
        client.post("/api/v1/auth/logout", json={"refresh_token": first["refresh_token"]}).status_code == 204
    )
    r = client.get("/api/v1/users/me", headers=bearer)
    assert r.status_code == 401 and "ended" in r.json()["detail"]
    assert client.get("/api/v1/stream?once=true", headers=bearer).status_code == 401
    assert (
        client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).status_code == 401
    )
    # The other session lives on, and ends by its access token alone.
    other_bearer = {"Authorization": f"Bearer {other['access_token']}"}
    assert client.get("/api/v1/users/me", headers=other_bearer).status_code == 200
    assert client.post("/api/v1/auth/logout", headers=other_bearer).status_code == 204
    assert client.get("/api/v1/users/me", headers=other_bearer).status_code == 401
    assert (
        client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 401
    )
    assert client.post("/api/v1/auth/logout").status_code == 401  # nothing to end


def test_password_change_ends_every_session(client: TestClient) -> None:
    me = register(client, "consumer")
    pairs = [
        client.post("/api/v1/auth/token", data={"username": me["email"], "password": PASSWORD}).json()
        for _ in range(2)
    ]
    bearer = {"Authorization": f"Bearer {pairs[0]['access_token']}"}
    new_password = "another long password"
    body = {"old_password": "not my password", "new_password": new_password}
    assert client.post("/api/v1/auth/password", json=body, headers=bearer).status_code == 401
    r = client.post("/api/v1/auth/password", json={**body, "old_password": PASSWORD}, headers=bearer)
    assert r.status_code == 200, r.text
    for pair in pairs:
        old = {"Authorization": f"Bearer {pair['access_token']}"}
        assert client.get("/api/v1/users/me", headers=old).status_code == 401
        assert (
            client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code
            == 401
        )
    fresh = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.get("/api/v1/users/me", headers=fresh).status_code == 200
    assert (
        client.post("/api/v1/auth/refresh", json={"refresh_token": r.json()["refresh_token"]}).status_code
        == 200
    )
    bad = client.post("/api/v1/auth/token", data={"username": me["email"], "password": PASSWORD})
    assert bad.status_code == 401
    login(client, me["email"], new_password)


# -- 4. login throttling ---------------------------------------------------------------------------------------


def _login(c: TestClient, email: str, password: str, **headers: str) -> int:
    return c.post(
        "/api/v1/auth/token", data={"username": email, "password": password}, headers=headers
    ).status_code


def _wait_out(ctx: Context) -> None:
    """As if every back-off had passed."""
    with Session(ctx.engine) as s:
        s.exec(update(LoginThrottle).values(locked_until=None))  # type: ignore[call-overload]
        s.commit()


def _fail(ctx: Context, c: TestClient, email: str, times: int = 6, **headers: str) -> None:
    """Wrong passwords, each after the back-off of the one before (the last leaves a 4-second wait)."""
    for i in range(times):
        _wait_out(ctx)
        assert _login(c, email, f"guess-{i}", **headers) == 401


def test_attackers_failures_do_not_lock_the_owner_out(client: TestClient, ctx: Context) -> None:
    me = register(client, "consumer")
    attacker, owner = from_client(client, ATTACKER), from_client(client, OWNER)
    _fail(ctx, attacker, me["email"])
    assert _login(attacker, me["email"], PASSWORD) == 429  # the attacker waits, even with the password
    assert _login(owner, me["email"], PASSWORD) == 200  # the owner, elsewhere, does not


def test_backoff_doubles_and_is_capped(client: TestClient, ctx: Context) -> None:
    me = register(client, "consumer")
    attacker = from_client(client, ATTACKER)
    key = f"pair:{ATTACKER}|{me['email']}"
    waits = []
    for i in range(9):
        _wait_out(ctx)
        assert _login(attacker, me["email"], f"guess-{i}") == 401
        with Session(ctx.engine) as s:
            row = s.exec(select(LoginThrottle).where(col(LoginThrottle.key) == key)).one()
            wait = (row.locked_until - row.window_start).total_seconds() if row.locked_until else 0
            waits.append(round(wait))
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32]
    ctx.settings.login_backoff_max_seconds = 20
    _wait_out(ctx)
    assert _login(attacker, me["email"], "guess-x") == 401
    r = attacker.post("/api/v1/auth/token", data={"username": me["email"], "password": "y"})
    assert r.status_code == 429
    assert 15 <= int(r.json()["detail"].split("try again in ")[1].split(" s")[0]) <= 20
    assert 15 <= int(r.headers["Retry-After"]) <= 20


def test_parallel_wrong_passwords_are_checked_within_the_limits(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = register(client, "consumer")
    # One instant for all 24: the 4th failure's 1-second back-off must not pass while they run. Under load
    # the last of them can start more than a second after the 4th was counted, and is then rightly checked.
    now = utcnow()
    monkeypatch.setattr(throttle, "utcnow", lambda: now)
    checked = counting(monkeypatch, users_service, "verify_secret")
    attacker = from_client(client, ATTACKER)
    codes = parallel(24, lambda i: _login(attacker, me["email"], f"guess-{i}"))
    assert set(codes) <= {401, 429} and len(checked) == codes.count(401) == 4, codes  # exactly the limit


def test_one_client_trying_many_accounts_is_stopped(client: TestClient, ctx: Context) -> None:
    ctx.settings.login_client_max_failures = 6
    emails = [register(client, "consumer")["email"] for _ in range(3)]
    attacker = from_client(client, ATTACKER)
    codes = [_login(attacker, emails[i % 3], f"guess-{i}") for i in range(8)]
    assert codes == [401] * 6 + [429] * 2
    assert _login(attacker, emails[0], PASSWORD) == 429  # from there, nothing more for a while
    assert _login(from_client(client, OWNER), emails[0], PASSWORD) == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored(client: TestClient, ctx: Context) -> None:
    me = register(client, "consumer")
    attacker = from_client(client, ATTACKER)
    _fail(ctx, attacker, me["email"], **{"X-Forwarded-For": "192.0.2.1"})
    # Claiming to be somebody new does not escape the back-off ...
    assert _login(attacker, me["email"], "guess", **{"X-Forwarded-For": "192.0.2.200"}) == 429
    # ... and failures cannot be put on the owner's address either.
    _fail(ctx, from_client(client, "198.51.100.8"), me["email"], **{"X-Forwarded-For": OWNER})
    assert _login(from_client(client, OWNER), me["email"], PASSWORD) == 200


def test_forwarded_for_from_a_trusted_proxy_is_used(client: TestClient, ctx: Context) -> None:
    ctx.settings.trusted_proxies = [ip_network("10.0.0.0/8")]
    me = register(client, "consumer")
    proxy = from_client(client, PROXY)
    _fail(ctx, proxy, me["email"], **{"X-Forwarded-For": ATTACKER})
    assert _login(proxy, me["email"], PASSWORD, **{"X-Forwarded-For": ATTACKER}) == 429
    # The proxy appends what it saw: an address the attacker wrote in front is not believed.
    assert _login(proxy, me["email"], PASSWORD, **{"X-Forwarded-For": f"{OWNER}, {ATTACKER}"}) == 429
    # The owner behind the same proxy (here through two of ours) is not held back.
    assert _login(proxy, me["email"], PASSWORD, **{"X-Forwarded-For": f"{OWNER}, 10.1.2.3"}) == 200
    # Without the setting, the proxy itself is the client (and it has not failed yet).
    ctx.settings.trusted_proxies = []
    assert _login(proxy, me["email"], PASSWORD, **{"X-Forwarded-For": ATTACKER}) == 200


# -- 5. registration ---------------------------------------------------------------------------------------------


def test_registration_does_not_tell_whether_an_email_exists(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = counting(monkeypatch, users_service, "hash_secret")
    first = {"email": "Kim@example.com", "password": PASSWORD, "display_name": "Kim", "role": "consumer"}
    new = client.post("/api/v1/auth/register", json=first)
    again = {"email": "kim@example.com", "password": "a different password", "display_name": "Mallory"}
    existing = client.post("/api/v1/auth/register", json={**again, "role": "prosumer"})
    assert (new.status_code, new.json()) == (existing.status_code, existing.json())
    assert new.status_code == 202 and set(new.json()) == {"email", "detail"}
    assert len(hashed) == 2  # Argon2 ran for the existing email too: it takes as long
    with Session(ctx.engine) as s:
        assert s.exec(select(func.count()).select_from(User)).one() == 1
    me = client.get("/api/v1/users/me", headers=login(client, "kim@example.com")).json()
    assert (me["display_name"], me["role"], me["status"]) == ("Kim", "consumer", "approved")
    assert _login(client, "kim@example.com", "a different password") == 401


def test_register_and_login_fields_are_bounded(client: TestClient) -> None:
    ok = {"email": "lee@example.com", "password": PASSWORD, "display_name": "Lee", "role": "consumer"}
    for bad in (
        {"display_name": "x" * 101},
        {"display_name": "nul\x00byte"},
        {"display_name": "line\nbreak"},
        {"email": "a" * 300 + "@example.com"},
        {"email": "nul\x00@example.com"},
        {"password": "p" * 129},
    ):
        r = client.post("/api/v1/auth/register", json={**ok, **bad})
        # NUL is refused by the request limits before validation (InvalidText), the rest by the schema
        assert r.status_code == 422 and r.json()["error"] in ("ValidationError", "InvalidText"), (bad, r.text)
    for username, password in (
        ("u" * 400 + "@example.com", PASSWORD),
        ("nul\x00@example.com", PASSWORD),
        ("a@b.c", "p" * 2000),
    ):
        r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
        assert r.status_code == 422 and r.json()["error"] in ("ValidationError", "InvalidText"), r.text
