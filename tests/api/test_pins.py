"""Issue 14: PINs checked by a keyed hash under a sealed pepper; legacy Argon2id hashes migrate on their
next successful check; the pepper follows a master-key rotation."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import Session, col, select

from app.context import Context
from app.core.security import hash_secret
from app.wallets import pins
from app.wallets.models import ServiceSecret, Wallet
from app.wallets.service import rotate_master_key
from tests.api.wallet_helpers import PIN, user_with_custodial_wallet
from wallet.envelope import MasterKey


def _wallet(ctx: Context, user_id: int) -> Wallet:
    with Session(ctx.engine) as s:
        return s.exec(select(Wallet).where(col(Wallet.user_id) == user_id)).one()


def _change(client: TestClient, headers: dict[str, str], old: str, new: str) -> int:
    body = {"old_pin": old, "new_pin": new}
    return client.post("/api/v1/wallets/me/pin", json=body, headers=headers).status_code


def test_a_pin_is_stored_as_a_keyed_hash_bound_to_its_user(client: TestClient, ctx: Context) -> None:
    user, _headers, _ = user_with_custodial_wallet(client)
    other, _h, _ = user_with_custodial_wallet(client)
    stored = _wallet(ctx, user["id"]).pin_hash or ""
    assert stored.startswith(pins.PREFIX) and PIN not in stored.removeprefix(pins.PREFIX)
    assert stored != _wallet(ctx, other["id"]).pin_hash  # same PIN, another user: another hash
    with Session(ctx.engine) as s:  # the pepper is sealed, never stored in clear
        sealed = s.get(ServiceSecret, pins.PEPPER)
        assert sealed is not None and pins.pepper(ctx).hex() not in sealed.sealed


def test_a_legacy_argon2_pin_hash_is_replaced_on_its_next_right_check(
    client: TestClient, ctx: Context
) -> None:
    user, headers, _ = user_with_custodial_wallet(client)
    legacy = hash_secret(PIN)
    with Session(ctx.engine) as s:
        s.exec(update(Wallet).where(col(Wallet.user_id) == user["id"]).values(pin_hash=legacy))  # type: ignore[call-overload]
        s.commit()
    assert _change(client, headers, "999999", "654321") == 403
    assert _wallet(ctx, user["id"]).pin_hash == legacy  # a wrong PIN changes nothing
    assert _change(client, headers, PIN, PIN) == 204
    migrated = _wallet(ctx, user["id"]).pin_hash or ""
    assert migrated.startswith(pins.PREFIX)
    assert _change(client, headers, "999999", "654321") == 403
    assert _change(client, headers, PIN, "654321") == 204  # the migrated hash checks the same PIN


def test_rotating_the_master_key_rewraps_the_pepper(client: TestClient, ctx: Context) -> None:
    _user, headers, _ = user_with_custodial_wallet(client)
    before = pins.pepper(ctx)
    with Session(ctx.engine) as s:
        row = s.get(ServiceSecret, pins.PEPPER)
        assert row is not None
        sealed_before = row.sealed
        old = MasterKey.from_setting(ctx.settings.secret("wallet_master_key"))
        new_setting = MasterKey.generate_setting()
        assert rotate_master_key(s, old, MasterKey.from_setting(new_setting)) >= 1
        s.commit()
    ctx.settings.wallet_master_key = SecretStr(new_setting)
    ctx.service_secrets.clear()  # as a restarted process: the pepper is opened under the new key
    with Session(ctx.engine) as s:
        row = s.get(ServiceSecret, pins.PEPPER)
        assert row is not None and row.sealed != sealed_before
    assert pins.pepper(ctx) == before
    assert _change(client, headers, PIN, "654321") == 204
