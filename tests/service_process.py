"""A real `essx run` process for end-to-end tests: free ports, its own data folder, real signals."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.polling import transfer_is_final, wait_until
from wallet.localchain import free_port

ROOT = Path(__file__).resolve().parents[1]
ESSX = str(Path(sys.executable).parent / "essx")
PIN = "123456"
USER_PASSWORD = "long-password-9"


class ServiceProcess:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port, self.chain_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "ESSX_DATA_DIR": str(data_dir),
            "ESSX_PORT": str(self.port),
            "ESSX_LOCAL_CHAIN_PORT": str(self.chain_port),
            "ESSX_LOG_JSON": "false",
        }
        self.env.pop("ESSX_DATABASE_URL", None)
        self.env.pop("ESSX_CRASH_AT", None)
        self.env.update(env)
        self.log = data_dir.parent / f"{data_dir.name}-service.log"
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90, **env: str) -> ServiceProcess:
        run_env = {**self.env, **env}
        self.proc = subprocess.Popen(
            [ESSX, "run"], cwd=ROOT, env=run_env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"essx run exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        pytest.fail(f"not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    for child in self.children():  # its API workers, or they outlive the test
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(child, signal.SIGKILL)
                    self.proc.kill()
                    raise
        finally:
            self._reap_chain()

    def children(self) -> list[int]:
        """The pids of the processes `essx run` started (API workers, simulators, a resource tracker)."""
        assert self.proc is not None
        try:
            return [
                int(p)
                for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            ]
        except OSError:  # gone already, or no /proc
            return []

    def wait_dead(self, timeout: float = 30) -> int:
        """The process died at a crash point; its chain (like a real, external node) keeps running."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def _reap_chain(self) -> None:
        """A killed service leaves its anvil running (its own session); a restart reuses it."""
        subprocess.run(["pkill", "-TERM", "-f", f"anvil.*--port {self.chain_port} "], check=False)
        time.sleep(0.5)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ESSX, *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )

    def admin_token(self, email: str = "root@example.com", password: str = "long-password-1") -> str:
        self.cli("create-admin", "--email", email, "--password", password)
        return self.token(email, password)

    def token(self, email: str, password: str) -> str:
        r = httpx.post(f"{self.base}/api/v1/auth/token", data={"username": email, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    # -- what the end-to-end tests arrange through the public API ----------------------------------------

    def user_with_wallet(
        self, email: str, role: str = "consumer", password: str = USER_PASSWORD
    ) -> tuple[int, dict[str, str], str]:
        """A registered user with a custodial wallet (PIN `PIN`): (user id, auth headers, address)."""
        r = httpx.post(
            f"{self.base}/api/v1/auth/register",
            json={"email": email, "password": password, "display_name": "x", "role": role},
        )
        assert r.status_code == 202, r.text
        headers = {"Authorization": f"Bearer {self.token(email, password)}"}
        user_id = httpx.get(f"{self.base}/api/v1/users/me", headers=headers).json()["id"]
        r = httpx.post(f"{self.base}/api/v1/wallets", json={"pin": PIN}, headers=headers)
        assert r.status_code == 201, r.text
        return int(user_id), headers, str(r.json()["address"])

    def mint(self, admin: dict[str, str], to: str, amount: str, key: str, timeout: float = 60) -> None:
        r = httpx.post(
            f"{self.base}/api/v1/admin/coin/mint",
            json={"to": to, "amount": amount},
            headers={**admin, "Idempotency-Key": key},
            timeout=timeout,
        )
        assert r.status_code == 200, r.text

    def final_transfer(self, headers: dict[str, str], transfer_id: str, timeout: float = 60) -> dict:
        """The transfer once confirmed or failed (or as it stands after `timeout` seconds)."""
        url = f"{self.base}/api/v1/transfers/{transfer_id}"
        return wait_until(lambda: dict(httpx.get(url, headers=headers).json()), transfer_is_final, timeout)

    def balance(self, address: str) -> str:
        return str(httpx.get(f"{self.base}/api/v1/accounts/{address}/balance").json()["balance"])
