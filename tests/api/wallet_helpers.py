"""Helpers for wallet and transfer tests: users with funded wallets, through the public API."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from app.wallets import attempts
from tests.api.helpers import idem, login, register
from tests.polling import transfer_is_final, wait_until

PIN = "123456"


def user_with_custodial_wallet(
    client: TestClient, role: str = "consumer"
) -> tuple[dict, dict[str, str], str]:
    user = register(client, role)
    headers = login(client, user["email"])
    r = client.post("/api/v1/wallets", json={"pin": PIN}, headers=headers)
    assert r.status_code == 201, r.text
    return user, headers, r.json()["address"]


def user_with_linked_wallet(
    client: TestClient, account: LocalAccount | None = None
) -> tuple[dict, dict[str, str], LocalAccount]:
    user = register(client, "consumer")
    headers = login(client, user["email"])
    account = account or Account.create()
    msg = client.post(
        "/api/v1/wallets/link/challenge", json={"address": account.address}, headers=headers
    ).json()["message"]
    sig = account.sign_message(encode_defunct(text=msg)).signature.hex()
    r = client.post(
        "/api/v1/wallets/link",
        json={"address": account.address, "message": msg, "signature": sig},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return user, headers, account


def fund(client: TestClient, admin: dict[str, str], address: str, amount: str) -> None:
    r = client.post(
        "/api/v1/admin/coin/mint", json={"to": address, "amount": amount}, headers={**admin, **idem()}
    )
    assert r.status_code == 200, r.text


def wait_final(client: TestClient, headers: dict[str, str], transfer_id: str, timeout: float = 20) -> dict:
    """The transfer once confirmed or failed (or as it stands after `timeout` seconds)."""
    url = f"/api/v1/transfers/{transfer_id}"
    return wait_until(lambda: dict(client.get(url, headers=headers).json()), transfer_is_final, timeout)


def passing_the_counter(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records each PIN attempt the counter's one statement let through (`attempts.settle_in` not None:
    the guesses that got an answer other than "locked"); the real function still runs."""
    passed: list[Any] = []
    real = attempts.settle_in

    def settled(*args: Any) -> Any:
        attempt = real(*args)
        if attempt is not None:
            passed.append(attempt)
        return attempt

    monkeypatch.setattr(attempts, "settle_in", settled)
    return passed
