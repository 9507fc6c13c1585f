"""`essx run` as a real process: serves, and after a restart the chain and the database are still there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from wallet.localchain import free_port

ROOT = Path(__file__).resolve().parents[1]
ESSX = str(Path(sys.executable).parent / "essx")


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([ESSX, "run"], cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"essx run exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"not ready in {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.slow
def test_run_mint_restart_keeps_chain_and_database(tmp_path: Path) -> None:
    port, chain_port = free_port(), free_port()
    env = {
        **os.environ,
        "ESSX_DATA_DIR": str(tmp_path / "data"),
        "ESSX_PORT": str(port),
        "ESSX_LOCAL_CHAIN_PORT": str(chain_port),
        "ESSX_LOG_JSON": "false",
    }
    env.pop("ESSX_DATABASE_URL", None)
    log = tmp_path / "run.log"
    base = f"http://127.0.0.1:{port}"
    holder = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

    proc = _start(env, log)
    try:
        _wait_ready(base, proc, log)
        assert "create-admin" in log.read_text()
        subprocess.run(
            [ESSX, "create-admin", "--email", "root@example.com", "--password", "long-password-1"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        token = httpx.post(
            f"{base}/api/v1/auth/token", data={"username": "root@example.com", "password": "long-password-1"}
        ).json()["access_token"]
        r = httpx.post(
            f"{base}/api/v1/admin/coin/mint",
            json={"to": holder, "amount": "42"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "restart-1"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
        coin = httpx.get(f"{base}/api/v1/coin").json()["address"]
    finally:
        _stop(proc)
    assert (tmp_path / "data" / "chain" / "anvil-state.json").exists()

    proc = _start(env, log)
    try:
        _wait_ready(base, proc, log)
        assert httpx.get(f"{base}/api/v1/coin").json()["address"] == coin  # not deployed again
        assert httpx.get(f"{base}/api/v1/accounts/{holder}/balance").json()["balance"] == "42"
        token = httpx.post(
            f"{base}/api/v1/auth/token", data={"username": "root@example.com", "password": "long-password-1"}
        ).json()["access_token"]
        # the database survived too: the same key replays the first answer instead of minting again
        r = httpx.post(
            f"{base}/api/v1/admin/coin/mint",
            json={"to": holder, "amount": "42"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "restart-1"},
            timeout=30,
        )
        assert r.status_code == 200
        assert httpx.get(f"{base}/api/v1/accounts/{holder}/balance").json()["balance"] == "42"
    finally:
        _stop(proc)
