"""`essx run` as a real process: serves, and after a restart the chain and the database are still there."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.service_process import ServiceProcess

pytestmark = pytest.mark.process  # runs `essx run` as a child process

HOLDER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _mint(svc: ServiceProcess, token: str) -> httpx.Response:
    return httpx.post(
        f"{svc.base}/api/v1/admin/coin/mint",
        json={"to": HOLDER, "amount": "42"},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "restart-1"},
        timeout=30,
    )


def test_run_mint_restart_keeps_chain_and_database(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "data")
    try:
        svc.start()
        assert "create-admin" in svc.log.read_text()
        token = svc.admin_token()
        r = _mint(svc, token)
        assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
        coin = httpx.get(f"{svc.base}/api/v1/coin").json()["address"]
    finally:
        svc.stop()
    assert (tmp_path / "data" / "chain" / "anvil-state.json").exists()
    try:
        svc.start()
        assert httpx.get(f"{svc.base}/api/v1/coin").json()["address"] == coin  # not deployed again
        assert httpx.get(f"{svc.base}/api/v1/accounts/{HOLDER}/balance").json()["balance"] == "42"
        # the database survived too: the same key replays the first answer instead of minting again
        r = _mint(svc, svc.token("root@example.com", "long-password-1"))
        assert r.status_code == 200
        assert httpx.get(f"{svc.base}/api/v1/accounts/{HOLDER}/balance").json()["balance"] == "42"
    finally:
        svc.stop()
