from __future__ import annotations

import time

from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import Session, select

from app.context import Context
from app.wallets.models import Wallet
from app.wallets.service import rotate_master_key, signer_for
from tests.api.helpers import login, register
from tests.api.wallet_helpers import PIN, user_with_custodial_wallet, user_with_linked_wallet
from wallet.envelope import MasterKey


def test_custodial_wallet_never_reveals_its_key(client: TestClient, ctx: Context) -> None:
    user, headers, address = user_with_custodial_wallet(client)
    me = client.get("/api/v1/wallets/me", headers=headers).json()
    assert me["address"] == address and me["kind"] == "custodial" and me["balance"] == "0"
    assert not any(k in me for k in ("sealed_key", "key", "private_key", "pin_hash"))
    with Session(ctx.engine) as s:
        wallet = s.exec(select(Wallet).where(Wallet.user_id == user["id"])).one()
        key = signer_for(ctx, wallet)._key.to_hex()  # type: ignore[attr-defined]
        assert key[2:] not in (wallet.sealed_key or "") and key[2:].upper() not in (wallet.sealed_key or "")
    assert client.post("/api/v1/wallets", json={"pin": PIN}, headers=headers).status_code == 409


def test_pin_change_needs_the_old_pin(client: TestClient) -> None:
    _u, headers, _ = user_with_custodial_wallet(client)
    r = client.post(
        "/api/v1/wallets/me/pin", json={"old_pin": "999999", "new_pin": "654321"}, headers=headers
    )
    assert r.status_code == 403
    r = client.post("/api/v1/wallets/me/pin", json={"old_pin": PIN, "new_pin": "654321"}, headers=headers)
    assert r.status_code == 204
    assert client.post("/api/v1/wallets", json={"pin": "12"}, headers=headers).status_code == 422


def test_link_a_mobile_wallet(client: TestClient) -> None:
    _u, headers, account = user_with_linked_wallet(client)
    me = client.get("/api/v1/wallets/me", headers=headers).json()
    assert me["kind"] == "linked" and me["address"] == account.address


def test_link_rejects_foreign_signatures_and_replays(client: TestClient) -> None:
    user = register(client, "consumer")
    headers = login(client, user["email"])
    account, intruder = Account.create(), Account.create()
    msg = client.post(
        "/api/v1/wallets/link/challenge", json={"address": account.address}, headers=headers
    ).json()["message"]
    assert "Chain ID: 31337" in msg
    bad = intruder.sign_message(encode_defunct(text=msg)).signature.hex()
    r = client.post(
        "/api/v1/wallets/link",
        json={"address": account.address, "message": msg, "signature": bad},
        headers=headers,
    )
    assert r.status_code == 422 and r.json()["error"] == "LinkRejected"
    tampered = msg.replace("Chain ID: 31337", "Chain ID: 1001")
    sig = account.sign_message(encode_defunct(text=tampered)).signature.hex()
    r = client.post(
        "/api/v1/wallets/link",
        json={"address": account.address, "message": tampered, "signature": sig},
        headers=headers,
    )
    assert r.status_code == 422
    good = account.sign_message(encode_defunct(text=msg)).signature.hex()
    ok = client.post(
        "/api/v1/wallets/link",
        json={"address": account.address, "message": msg, "signature": good},
        headers=headers,
    )
    assert ok.status_code == 201
    again = client.post(
        "/api/v1/wallets/link",
        json={"address": account.address, "message": msg, "signature": good},
        headers=headers,
    )
    assert again.status_code == 409  # one active wallet at most
    r = client.post("/api/v1/wallets/link/challenge", json={"address": "0xnope"}, headers=headers)
    assert r.status_code == 422


def test_rotating_the_master_key_keeps_addresses_and_keys(client: TestClient, ctx: Context) -> None:
    user, _headers, address = user_with_custodial_wallet(client)
    with Session(ctx.engine) as s:
        wallet = s.exec(select(Wallet).where(Wallet.user_id == user["id"])).one()
        before_key = signer_for(ctx, wallet)._key.to_hex()  # type: ignore[attr-defined]
        before_sealed = wallet.sealed_key
        old = MasterKey.from_setting(ctx.settings.secret("wallet_master_key"))
        new_setting = MasterKey.generate_setting()
        assert rotate_master_key(s, old, MasterKey.from_setting(new_setting)) >= 1
        s.commit()
    ctx.settings.wallet_master_key = SecretStr(new_setting)
    with Session(ctx.engine) as s:
        wallet = s.exec(select(Wallet).where(Wallet.user_id == user["id"])).one()
        assert wallet.address == address and wallet.sealed_key != before_sealed
        assert signer_for(ctx, wallet)._key.to_hex() == before_key  # type: ignore[attr-defined]


def test_approval_grant_is_minted_once_when_approval_and_wallet_exist(
    client: TestClient, ctx: Context
) -> None:
    from tests.api.helpers import admin_headers

    ctx.settings.approval_grant = "5"
    admin = admin_headers(client, ctx)
    # approved first, wallet later: the grant waits for the wallet
    first = register(client, "prosumer")
    r = client.post(f"/api/v1/admin/users/{first['id']}/approve", headers=admin)
    assert r.json()["grant_status"] == "pending_wallet"
    headers = login(client, first["email"])
    address = client.post("/api/v1/wallets", json={"pin": PIN}, headers=headers).json()["address"]
    # wallet first, approval later: minted at approval
    second = register(client, "prosumer")
    h2 = login(client, second["email"])
    address2 = client.post("/api/v1/wallets", json={"pin": PIN}, headers=h2).json()["address"]
    r = client.post(f"/api/v1/admin/users/{second['id']}/approve", headers=admin)
    assert r.json()["grant_status"] == "minted" and r.json()["grant_tx_hash"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        ctx.coin.functions.balanceOf(address).call() == 0
        or ctx.coin.functions.balanceOf(address2).call() == 0
    ):
        time.sleep(0.2)
    assert ctx.coin.functions.balanceOf(address).call() == 5 * 10**18
    assert ctx.coin.functions.balanceOf(address2).call() == 5 * 10**18
