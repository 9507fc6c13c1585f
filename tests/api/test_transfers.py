from __future__ import annotations

import uuid

import pyotp
from eth_account import Account
from eth_account.messages import encode_typed_data
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlmodel import Session

from app.context import Context
from app.core.security import utcnow
from app.transfers.batching import TransferBatcher, has_authorized
from app.transfers.models import Transfer
from tests.api.helpers import admin_headers, idem
from tests.api.wallet_helpers import (
    PIN,
    fund,
    user_with_custodial_wallet,
    user_with_linked_wallet,
    wait_final,
)
from tests.market.test_live_book import users


def _send(
    client: TestClient, headers: dict[str, str], to: object, amount: str, key: dict[str, str] | None = None
):
    return client.post(
        "/api/v1/transfers",
        json={"to": to, "amount": amount, "memo": "m"},
        headers={**headers, **(key or idem())},
    )


def test_custodial_transfer_end_to_end_with_steps(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _sender, s_headers, s_addr = user_with_custodial_wallet(client)
    receiver, r_headers, r_addr = user_with_custodial_wallet(client)
    fund(client, admin, s_addr, "10")
    r = _send(client, s_headers, receiver["id"], "2.5")
    assert r.status_code == 201, r.text
    t = r.json()
    assert (
        t["status"] == "pending_authorization"
        and t["challenge"]["type"] == "pin"
        and t["to_address"] == r_addr
    )
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": PIN}, headers=s_headers)
    assert r.status_code == 200, r.text
    done = wait_final(client, s_headers, t["id"])
    assert done["status"] == "confirmed", done
    kinds = [s["kind"] for s in done["steps"]]
    assert kinds == [
        "requested",
        "challenge_issued",
        "authorized",
        "signed",
        "submitted",
        "mined",
        "confirmed",
    ]
    signed = done["steps"][3]["details"]
    assert (
        Account.recover_message(
            encode_typed_data(full_message=_typed(ctx, t["id"])), signature=signed["signature"]
        )
        == s_addr
    )
    assert done["steps"][5]["details"]["block_number"] == done["block_number"]
    assert ctx.coin.functions.balanceOf(r_addr).call() == 25 * 10**17
    assert ctx.coin.functions.balanceOf(s_addr).call() == 75 * 10**17
    # the sender paid no gas: its native balance is still zero
    assert ctx.w3.eth.get_balance(s_addr) == 0
    incoming = client.get("/api/v1/transfers?direction=in", headers=r_headers).json()["items"]
    assert [i["id"] for i in incoming] == [t["id"]]
    assert client.get("/api/v1/transfers?direction=out", headers=r_headers).json()["items"] == []


def _typed(ctx: Context, transfer_id: str) -> dict:
    with Session(ctx.engine) as s:
        row = s.get(Transfer, transfer_id)
        assert row is not None
        return row.typed_data


def test_linked_wallet_signs_typed_data(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _user, headers, account = user_with_linked_wallet(client)
    fund(client, admin, account.address, "3")
    to = Account.create().address
    t = _send(client, headers, to, "1").json()
    typed = t["challenge"]["typed_data"]
    assert typed["primaryType"] == "TransferWithAuthorization" and typed["domain"]["chainId"] == 31337
    # another key's signature is refused and changes nothing
    other = Account.sign_message(encode_typed_data(full_message=typed), Account.create().key).signature.hex()
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"signature": other}, headers=headers)
    assert r.status_code == 422 and r.json()["error"] == "WrongSigner"
    # typed data for another chain id does not verify either
    foreign = {**typed, "domain": {**typed["domain"], "chainId": 1001}}
    bad = account.sign_message(encode_typed_data(full_message=foreign)).signature.hex()
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"signature": bad}, headers=headers)
    assert r.status_code == 422
    sig = account.sign_message(encode_typed_data(full_message=typed)).signature.hex()
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"signature": sig}, headers=headers)
    assert r.status_code == 200, r.text
    assert wait_final(client, headers, t["id"])["status"] == "confirmed"
    assert ctx.coin.functions.balanceOf(to).call() == 10**18
    again = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"signature": sig}, headers=headers)
    assert again.status_code == 409


def test_bad_transfers_are_4xx_and_move_nothing(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    _o, other_headers, _ = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    supply = ctx.coin.functions.totalSupply().call()
    for to, amount, error in (
        ("0x1234", "1", "InvalidAddress"),
        (Account.create().address, "0", "InvalidAmount"),
        (Account.create().address, "-3", "InvalidAmount"),
        (Account.create().address, "1.000001", "InsufficientBalance"),
        (addr, "0.1", "AppError"),
    ):
        r = _send(client, headers, to, amount)
        assert 400 <= r.status_code < 500 and r.json()["error"] == error, r.text
    t = _send(client, headers, Account.create().address, "0.5").json()
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": PIN}, headers=other_headers)
    assert r.status_code == 404  # another user's transfer
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={}, headers=headers)
    assert r.status_code == 422 and r.json()["error"] == "AuthorizationMissing"
    assert (
        ctx.coin.functions.totalSupply().call() == supply
        and ctx.coin.functions.balanceOf(addr).call() == 10**18
    )


def test_wrong_pin_locks_the_wallet(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    t = _send(client, headers, Account.create().address, "0.5").json()
    for left in (4, 3, 2, 1):
        r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": "000000"}, headers=headers)
        assert r.status_code == 403 and f"{left} attempts" in r.json()["detail"]
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": "000000"}, headers=headers)
    assert r.status_code == 423 and r.json()["error"] == "WalletLocked"
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": PIN}, headers=headers)
    assert r.status_code == 423  # even the right PIN waits out the lock
    assert ctx.coin.functions.balanceOf(addr).call() == 10**18


def test_totp_required_and_accepted_once(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "2")
    setup = client.post("/api/v1/auth/totp/setup", headers=headers).json()
    totp = pyotp.TOTP(setup["secret"])
    assert (
        client.post(
            "/api/v1/auth/totp/verify",
            json={"code": "000000" if totp.now() != "000000" else "111111"},
            headers=headers,
        ).status_code
        == 403
    )
    code = totp.now()
    assert client.post("/api/v1/auth/totp/verify", json={"code": code}, headers=headers).json() == {
        "enabled": True
    }
    t = _send(client, headers, Account.create().address, "1").json()
    assert t["challenge"]["otp_required"] is True
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": PIN}, headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "OtpRequired"
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": PIN, "otp": code}, headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "WrongOtp"  # the enrolment already used this code


def test_expired_authorization_fails_cleanly(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    t = _send(client, headers, Account.create().address, "1").json()
    with Session(ctx.engine) as s:
        s.exec(update(Transfer).where(Transfer.id == t["id"]).values(valid_before=1000))  # type: ignore[call-overload]
        s.commit()
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": PIN}, headers=headers)
    assert r.status_code == 422 and r.json()["error"] == "AuthorizationExpired"
    assert client.get(f"/api/v1/transfers/{t['id']}", headers=headers).json()["status"] == "failed"


def test_idempotent_create(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    to = Account.create().address
    key = idem()
    a = _send(client, headers, to, "0.1", key)
    b = _send(client, headers, to, "0.1", key)
    assert a.status_code == b.status_code == 201 and a.json()["id"] == b.json()["id"]
    c = _send(client, headers, to, "0.2", key)
    assert c.status_code == 422 and c.json()["error"] == "IdempotencyKeyReused"


def test_an_idle_batcher_pass_is_one_existence_check(ctx: Context) -> None:
    batcher = TransferBatcher(ctx)  # never started: its pass is run here
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", seen)
    try:
        assert batcher.submit() == 0
    finally:
        event.remove(ctx.engine, "before_cursor_execute", seen)
    # nothing authorised: no session, no batch lock, no row locks, only the one indexed lookup
    assert len(statements) == 1 and statements[0].startswith("SELECT transfers.id \nFROM transfers"), (
        statements
    )

    (user_id,) = users(ctx.engine, 1)
    now = utcnow()
    row = Transfer(
        id=uuid.uuid4().hex,
        user_id=user_id,
        wallet_kind="custodial",
        from_address=Account.create().address,
        to_address=Account.create().address,
        amount=1,
        status="pending_authorization",
        nonce="0x" + "11" * 32,
        valid_after=0,
        valid_before=2**31 - 1,
        typed_data={},
        created_at=now,
        updated_at=now,
    )
    with Session(ctx.engine) as s:
        s.add(row)
        s.commit()
        assert not has_authorized(ctx)  # waiting for its authorisation: nothing to relay yet
        row.status = "authorized"
        s.add(row)
        s.flush()
        assert not has_authorized(ctx)  # not committed yet
        s.commit()
    assert has_authorized(ctx)
