"""Start an ESSX service (`essx run`) as a child process on free ports and wait until it is ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from wallet.localchain import free_port

ROOT = Path(__file__).resolve().parents[2]
ESSX = str(Path(sys.executable).parent / "essx")


@dataclass
class ServiceHandle:
    base: str
    chain_url: str
    env: dict[str, str]
    data_dir: Path
    log: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Runs another `essx` command against the same data folder and settings."""
        return subprocess.run(
            [ESSX, *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )

    def admin_token(self, email: str = "bench@example.com", password: str = "bench-password-1") -> str:
        """Creates an admin (`essx create-admin`) and logs in: an access token."""
        self.cli("create-admin", "--email", email, "--password", password)
        r = httpx.post(f"{self.base}/api/v1/auth/token", data={"username": email, "password": password})
        r.raise_for_status()
        return str(r.json()["access_token"])


@contextmanager
def child_service(
    data_dir: Path, env: dict[str, str] | None = None, *, port: int | None = None, timeout: float = 120
) -> Iterator[ServiceHandle]:
    """`essx run` with its own data folder; stopped with Ctrl-C (the chain's state is saved) on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port, chain_port = port or free_port(), free_port()
    full_env = {
        **os.environ,
        "ESSX_DATA_DIR": str(data_dir),
        "ESSX_PORT": str(port),
        "ESSX_LOCAL_CHAIN_PORT": str(chain_port),
        "ESSX_LOG_JSON": "false",
        **(env or {}),
    }
    log = data_dir / "service.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([ESSX, "run"], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the service did not start (log: {log}):\n{tail}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield ServiceHandle(base, f"http://127.0.0.1:{chain_port}", full_env, data_dir, log)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
