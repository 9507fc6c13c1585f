"""A PIN's attempt is counted in the authorisation's own transaction (issue 14): a right PIN commits once,
with the spend it authorises, in one statement on the wallet's counter (attempts.settle_in); a wrong one is
committed before it is answered, and parallel guesses still get at most the limit of answers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlmodel import Session, col, select

from app.context import Context
from app.core.security import utcnow
from app.transfers import service as transfers
from app.transfers.schemas import TransferAuthorize
from app.users.models import User
from app.wallets import pins
from app.wallets import service as wallets_service
from app.wallets.models import Wallet
from tests.api.helpers import admin_headers, idem
from tests.api.wallet_helpers import PIN, fund, passing_the_counter, user_with_custodial_wallet


def _parallel(n: int, fn: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def _pending_transfer(client: TestClient, ctx: Context) -> tuple[dict[str, str], int, str]:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "5")
    body = {"to": Account.create().address, "amount": "0.1"}
    r = client.post("/api/v1/transfers", json=body, headers={**headers, **idem()})
    assert r.status_code == 201, r.text
    user_id = client.get("/api/v1/users/me", headers=headers).json()["id"]
    return headers, user_id, r.json()["id"]


def test_a_right_pin_commits_once_with_the_transfer_it_authorises(client: TestClient, ctx: Context) -> None:
    _headers, user_id, transfer_id = _pending_transfer(client, ctx)
    with Session(ctx.engine, expire_on_commit=False) as session:
        commits: list[int] = []
        event.listen(session, "after_commit", lambda _s: commits.append(1))
        user = session.get(User, user_id)
        assert user is not None
        answer = transfers.authorize(ctx, session, user, transfer_id, TransferAuthorize(pin=PIN))
    assert answer.status != "pending_authorization"  # authorised (and perhaps relayed already)
    assert commits == [1]  # the attempt, its reset and the authorisation together


def test_a_right_pin_counts_its_attempt_in_one_statement(client: TestClient, ctx: Context) -> None:
    _headers, user_id, transfer_id = _pending_transfer(client, ctx)
    counters: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE WALLETS") and "pin_failures" in statement:
            counters.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", seen)
    try:
        with Session(ctx.engine, expire_on_commit=False) as session:
            user = session.get(User, user_id)
            assert user is not None
            answer = transfers.authorize(ctx, session, user, transfer_id, TransferAuthorize(pin=PIN))
    finally:
        event.remove(ctx.engine, "before_cursor_execute", seen)
    assert answer.status != "pending_authorization"
    assert len(counters) == 1, counters  # not an attempt, then its reset
    with Session(ctx.engine) as s:
        wallet = s.exec(select(Wallet).where(col(Wallet.user_id) == user_id)).one()
        assert wallet.pin_failures == 0 and wallet.locked_until is None


def test_a_right_pin_on_a_locked_wallet_authorises_nothing(client: TestClient, ctx: Context) -> None:
    headers, user_id, transfer_id = _pending_transfer(client, ctx)
    with Session(ctx.engine) as s:
        wallet = s.exec(select(Wallet).where(col(Wallet.user_id) == user_id)).one()
        wallet.locked_until = utcnow() + wallets_service.PIN_LOCKOUT
        s.add(wallet)
        s.commit()

    def right(_i: int) -> int:
        url = f"/api/v1/transfers/{transfer_id}/authorize"
        return client.post(url, json={"pin": PIN}, headers=headers).status_code

    assert _parallel(6, right) == [423] * 6
    r = client.get(f"/api/v1/transfers/{transfer_id}", headers=headers)
    assert r.json()["status"] == "pending_authorization"
    with Session(ctx.engine) as s:  # and the lock stands
        wallet = s.exec(select(Wallet).where(col(Wallet.user_id) == user_id)).one()
        assert wallet.locked_until is not None and wallet.locked_until > utcnow()


def test_a_wrong_pin_is_counted_before_it_is_answered(client: TestClient, ctx: Context) -> None:
    headers, user_id, transfer_id = _pending_transfer(client, ctx)
    seen: list[int] = []
    real = pins.verify_pin

    def look(*args: Any) -> bool:  # what another connection sees once the PIN was checked
        right = real(*args)
        with Session(ctx.engine) as s:
            seen.append(s.exec(select(Wallet.pin_failures).where(col(Wallet.user_id) == user_id)).one())
        return right

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pins, "verify_pin", look)
        r = client.post(f"/api/v1/transfers/{transfer_id}/authorize", json={"pin": "999999"}, headers=headers)
    assert r.status_code == 403 and "4 attempts left" in r.json()["detail"]
    assert seen == [0]  # not committed while it was checked ...
    with Session(ctx.engine) as s:  # ... and committed before the answer
        assert s.exec(select(Wallet.pin_failures).where(col(Wallet.user_id) == user_id)).one() == 1


def test_parallel_wrong_pins_on_a_transfer_check_at_most_the_limit(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers, user_id, transfer_id = _pending_transfer(client, ctx)
    passed = passing_the_counter(monkeypatch)  # the rest were answered "locked"

    def guess(i: int) -> int:
        body = {"pin": f"{900000 + i}"}
        return client.post(
            f"/api/v1/transfers/{transfer_id}/authorize", json=body, headers=headers
        ).status_code

    codes = _parallel(24, guess)
    assert set(codes) <= {403, 423} and codes.count(403) <= 4, codes
    assert len(passed) <= wallets_service.PIN_MAX_FAILURES
    with Session(ctx.engine) as s:
        wallet = s.exec(select(Wallet).where(col(Wallet.user_id) == user_id)).one()
        assert wallet.locked_until is not None and wallet.locked_until > utcnow()
    r = client.post(f"/api/v1/transfers/{transfer_id}/authorize", json={"pin": PIN}, headers=headers)
    assert r.status_code == 423 and r.json()["error"] == "WalletLocked"  # even the right PIN waits
