"""Contracts deployed once per test module inside a module-wide snapshot; each test additionally runs in
`chain_snapshot`, so state changes never leak between tests or into other modules."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from tests.contracts.chain import deploy
from wallet.localchain import PROJECT_ROOT

COIN_NAME = "ESSX Energy Coin"
COIN_SYMBOL = "EEC"


@pytest.fixture(scope="module")
def module_chain(w3: Web3) -> Iterator[None]:
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield
    finally:
        w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def admin(dev_accounts: list[LocalAccount]) -> LocalAccount:
    return dev_accounts[0]


@pytest.fixture(scope="module")
def alice(dev_accounts: list[LocalAccount]) -> LocalAccount:
    return dev_accounts[1]


@pytest.fixture(scope="module")
def bob(dev_accounts: list[LocalAccount]) -> LocalAccount:
    return dev_accounts[2]


@pytest.fixture(scope="module")
def carol(dev_accounts: list[LocalAccount]) -> LocalAccount:
    return dev_accounts[3]


@pytest.fixture(scope="module")
def coin(w3: Web3, module_chain: None, admin: LocalAccount) -> Contract:
    return deploy(w3, "EnergyCoin", admin, COIN_NAME, COIN_SYMBOL, admin.address)


@pytest.fixture(scope="module")
def chain_id(w3: Web3) -> int:
    return int(w3.eth.chain_id)


@pytest.fixture(scope="session", autouse=True)
def compile_beside_the_chain_tests(request: pytest.FixtureRequest) -> None:
    """In one test process the compiler starts with the first contract test and runs beside the chain tests
    (test_sources_match_artefacts, collected last, waits for its verdict). Under xdist only the worker that
    runs that test starts it (there, first: tests/conftest.py SLOW_FIRST); every worker would otherwise
    compile once, about 7 s of CPU each."""
    if getattr(request.config, "workerinput", None) is None:
        request.getfixturevalue("artefact_check")


@pytest.fixture(scope="session")
def artefact_check() -> Iterator[subprocess.Popen[str] | None]:
    """`node contracts/build.mjs --check`, running; test_sources_match_artefacts waits for its verdict."""
    if shutil.which("node") is None:
        yield None
        return
    proc = subprocess.Popen(
        ["node", "contracts/build.mjs", "--check"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
