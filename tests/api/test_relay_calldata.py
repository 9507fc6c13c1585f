"""The transfer batch's call data, encoded without web3's contract layer, is what that layer encodes."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import Web3

from app.transfers.batching import relay_calldata
from contracts.artifacts import load_artifact


def test_relay_calldata_matches_the_contract_abi() -> None:
    relay = Web3().eth.contract(abi=load_artifact("AuthorizationRelay").abi)
    items = [
        (
            Account.create().address,
            Account.create().address,
            10**18 + i,
            0,
            1_900_000_000 + i,
            bytes([i]) * 32,
            27 + i % 2,
            bytes([i + 1]) * 32,
            bytes([i + 2]) * 32,
        )
        for i in range(3)
    ]
    largest = (Account.create().address, Account.create().address, 2**256 - 1, 2**256 - 1, 2**256 - 1)
    items.append((*largest, b"\xff" * 32, 255, b"\xff" * 32, b"\xff" * 32))
    assert relay_calldata(items) == relay.encodeABI(fn_name="relay", args=[items])
    assert relay_calldata([]) == relay.encodeABI(fn_name="relay", args=[[]])


def test_relay_calldata_refuses_what_the_abi_cannot_hold() -> None:
    good = (
        Account.create().address,
        Account.create().address,
        1,
        0,
        2,
        b"\x01" * 32,
        27,
        b"\x02" * 32,
        b"\x03" * 32,
    )
    for i, bad in ((2, 2**256), (2, -1), (6, 256), (0, "0x1234"), (5, b"\x01" * 31)):
        item = list(good)
        item[i] = bad
        with pytest.raises(ValueError):
            relay_calldata([tuple(item)])
