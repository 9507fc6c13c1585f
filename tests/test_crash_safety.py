"""Kill a real service process between the steps of a transfer; a restart finishes it exactly once."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from tests.service_process import ServiceProcess

PIN = "123456"


def _prepare_transfer(svc: ServiceProcess) -> tuple[dict[str, str], str, str, str]:
    admin = {"Authorization": f"Bearer {svc.admin_token()}"}
    email, password = "kim@example.com", "long-password-2"
    r = httpx.post(
        f"{svc.base}/api/v1/auth/register",
        json={"email": email, "password": password, "display_name": "Kim", "role": "consumer"},
    )
    assert r.status_code == 202, r.text
    user = {"Authorization": f"Bearer {svc.token(email, password)}"}
    address = httpx.post(f"{svc.base}/api/v1/wallets", json={"pin": PIN}, headers=user).json()["address"]
    r = httpx.post(
        f"{svc.base}/api/v1/admin/coin/mint",
        json={"to": address, "amount": "10"},
        headers={**admin, "Idempotency-Key": "fund"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    to = Account.create().address
    r = httpx.post(
        f"{svc.base}/api/v1/transfers",
        json={"to": to, "amount": "4"},
        headers={**user, "Idempotency-Key": "t1"},
    )
    assert r.status_code == 201, r.text
    return user, r.json()["id"], address, to


def _balance(svc: ServiceProcess, address: str) -> str:
    return str(httpx.get(f"{svc.base}/api/v1/accounts/{address}/balance").json()["balance"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "crash_at", ["transfer.after_sign", "transfer.after_submit", "relayer.after_broadcast:transfer_batch"]
)
def test_killed_mid_transfer_finishes_exactly_once_after_restart(tmp_path: Path, crash_at: str) -> None:
    svc = ServiceProcess(tmp_path / "data")
    try:
        svc.start(ESSX_CRASH_AT=crash_at)
        user, transfer_id, sender, to = _prepare_transfer(svc)
        # the process dies while answering, or (after broadcast) in its relayer thread just after
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{svc.base}/api/v1/transfers/{transfer_id}/authorize",
                json={"pin": PIN},
                headers=user,
                timeout=30,
            )
        assert svc.wait_dead() == 137
        svc.start()  # no crash point this time
        deadline = time.monotonic() + 30
        while True:
            body = httpx.get(f"{svc.base}/api/v1/transfers/{transfer_id}", headers=user).json()
            if body["status"] in ("confirmed", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert body["status"] == "confirmed", body
        kinds = [s["kind"] for s in body["steps"]]
        assert kinds == [
            "requested",
            "challenge_issued",
            "authorized",
            "signed",
            "submitted",
            "mined",
            "confirmed",
        ]
        assert _balance(svc, to) == "4" and _balance(svc, sender) == "6"
        # a second authorize cannot pay again
        r = httpx.post(
            f"{svc.base}/api/v1/transfers/{transfer_id}/authorize", json={"pin": PIN}, headers=user
        )
        assert r.status_code == 409
        time.sleep(2)  # a few more blocks and relayer passes: still paid once
        assert _balance(svc, to) == "4"
    finally:
        svc.stop()
