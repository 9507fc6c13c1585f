"""Kill a real service process between the steps of a transfer; a restart finishes it exactly once."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from tests.polling import TRANSFER_STEPS
from tests.service_process import PIN, ServiceProcess

pytestmark = pytest.mark.process  # runs `essx run` as a child process


def _prepare_transfer(svc: ServiceProcess) -> tuple[dict[str, str], str, str, str]:
    admin = {"Authorization": f"Bearer {svc.admin_token()}"}
    _id, user, address = svc.user_with_wallet("kim@example.com")
    svc.mint(admin, address, "10", key="fund")
    to = Account.create().address
    r = httpx.post(
        f"{svc.base}/api/v1/transfers",
        json={"to": to, "amount": "4"},
        headers={**user, "Idempotency-Key": "t1"},
    )
    assert r.status_code == 201, r.text
    return user, r.json()["id"], address, to


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
        body = svc.final_transfer(user, transfer_id)
        assert body["status"] == "confirmed", body
        assert [s["kind"] for s in body["steps"]] == TRANSFER_STEPS
        assert svc.balance(to) == "4" and svc.balance(sender) == "6"
        # a second authorize cannot pay again
        r = httpx.post(
            f"{svc.base}/api/v1/transfers/{transfer_id}/authorize", json={"pin": PIN}, headers=user
        )
        assert r.status_code == 409
        time.sleep(2)  # a few more blocks and relayer passes: still paid once
        assert svc.balance(to) == "4"
    finally:
        svc.stop()
