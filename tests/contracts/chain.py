"""Small helpers for contract tests: deploy from the committed artefacts, send signed transactions,
assert reverts both in a call and in a mined transaction."""

from __future__ import annotations

import re
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.types import EventData, TxReceipt

from contracts.artifacts import deploy_contract, load_artifact

# Enough for every reverting call in these tests; a fixed limit skips estimation, so the transaction
# really is mined and reverts on chain.
REVERT_GAS = 1_000_000


def deploy(w3: Web3, name: str, sender: LocalAccount, *args: Any) -> Contract:
    artifact = load_artifact(name)
    address = deploy_contract(w3, artifact, sender, *args)
    return w3.eth.contract(address=address, abi=artifact.abi)


def _signed_send(w3: Web3, fn: ContractFunction, sender: LocalAccount, gas: int | None) -> TxReceipt:
    params: dict[str, Any] = {
        "from": sender.address,
        "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
        "chainId": w3.eth.chain_id,
    }
    if gas is not None:
        params["gas"] = gas
    tx = fn.build_transaction(params)  # type: ignore[arg-type]
    signed = sender.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.rawTransaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)


def send(w3: Web3, fn: ContractFunction, sender: LocalAccount) -> TxReceipt:
    """Sign `fn` locally as `sender`, send it, and return the receipt of a successful transaction."""
    receipt = _signed_send(w3, fn, sender, gas=None)
    assert receipt["status"] == 1, f"{fn.fn_name} failed: {receipt}"
    return receipt


def assert_reverts(w3: Web3, fn: ContractFunction, sender: LocalAccount, reason: str) -> None:
    """`fn` sent by `sender` reverts with `reason` (a literal substring), both in a call and on chain."""
    with pytest.raises(ContractLogicError, match=re.escape(reason)):
        fn.call({"from": sender.address})
    receipt = _signed_send(w3, fn, sender, gas=REVERT_GAS)
    assert receipt["status"] == 0, f"{fn.fn_name} was expected to revert on chain"


def events(contract: Contract, event_name: str, receipt: TxReceipt) -> list[EventData]:
    """The receipt's `event_name` logs emitted by `contract` (other logs are skipped silently)."""
    return [
        e
        for e in contract.events[event_name]().process_receipt(receipt, errors=DISCARD)
        if e["address"] == contract.address
    ]


def latest_timestamp(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def interface_id(*signatures: str) -> bytes:
    """KIP-13/ERC-165 interface id: XOR of the interface's own function selectors."""
    value = 0
    for sig in signatures:
        value ^= int.from_bytes(selector(sig), "big")
    return value.to_bytes(4, "big")
