"""The local development chain: an anvil node from node_modules, started and stopped by us.

anvil's first dev account (the well-known mnemonic) is allowed as the service key only on this chain.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_CHAIN_ID = 31337
# anvil's well-known development accounts (public knowledge; never valid outside the local chain).
ANVIL_DEV_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
)


class AnvilNotFound(RuntimeError):
    pass


def anvil_binary() -> str:
    """The native anvil binary shipped by @foundry-rs/anvil (no download at run time)."""
    found = sorted(glob.glob(str(PROJECT_ROOT / "node_modules/@foundry-rs/anvil-*/bin/anvil")))
    if found:
        return found[0]
    wrapper = PROJECT_ROOT / "node_modules/.bin/anvil"
    if wrapper.exists():
        return str(wrapper)
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise AnvilNotFound("anvil not found: run `npm install` (the Makefile does it for you)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AnvilNode:
    """One anvil process. `block_time=None` means automine (one block per transaction)."""

    port: int = 8545
    chain_id: int = LOCAL_CHAIN_ID
    block_time: float | None = 1.0
    state_file: Path | None = None
    state_interval: int = 10
    log_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            anvil_binary(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            "4",
            "--balance",
            "1000000",
            "--silent",
        ]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        if self.state_file is not None:
            # --state loads the file if present and dumps to it on exit and every interval.
            cmd += ["--state", str(self.state_file), "--state-interval", str(self.state_interval)]
        return cmd + self.extra_args

    def start(self, timeout: float = 20.0) -> AnvilNode:
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"anvil exited with code {self._proc.returncode} on port {self.port}")
            if rpc_chain_id(self.url) is not None:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"anvil did not answer on {self.url} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM lets anvil dump its state file before it exits."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rpc_chain_id(url: str, timeout: float = 1.0) -> int | None:
    """The chain id a node reports, or None when nothing answers."""
    try:
        r = httpx.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        )
        return int(r.json()["result"], 16)
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def environment_chain_url() -> str | None:
    """Tests may point at an already running node with ESSX_TEST_CHAIN_URL."""
    return os.environ.get("ESSX_TEST_CHAIN_URL") or None
