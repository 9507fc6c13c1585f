"""Shared fixtures: one real anvil node per test session (automine), snapshot/revert per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from wallet.localchain import ANVIL_DEV_KEYS, AnvilNode, environment_chain_url, free_port


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    url = environment_chain_url()
    if url:
        yield url
        return
    node = AnvilNode(port=free_port(), block_time=None).start()
    try:
        yield node.url
    finally:
        node.stop()


@pytest.fixture(scope="session")
def w3(anvil_url: str) -> Web3:
    return Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 30}))


@pytest.fixture(scope="session")
def dev_accounts() -> list[LocalAccount]:
    """anvil's funded development accounts: [0] deploys and administers, the others are users."""
    return [Account.from_key(k) for k in ANVIL_DEV_KEYS]


@pytest.fixture
def chain_snapshot(w3: Web3) -> Iterator[None]:
    """Run a test on a chain that is rewound afterwards, so tests never see each other's state."""
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield
    finally:
        w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
