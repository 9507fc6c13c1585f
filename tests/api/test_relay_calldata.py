"""The transfer batch's call data, encoded without web3's contract layer, is what that layer encodes."""

from __future__ import annotations

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
    assert relay_calldata(items) == relay.encodeABI(fn_name="relay", args=[items])
    assert relay_calldata([]) == relay.encodeABI(fn_name="relay", args=[[]])
