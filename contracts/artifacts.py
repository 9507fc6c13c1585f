"""Compiled contract artefacts (contracts/build/*.json, written by `node contracts/build.mjs`) and deployment.

Python never runs the compiler: it reads the committed ABI and bytecode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3

BUILD_DIR = Path(__file__).resolve().parent / "build"


class ArtifactNotFound(LookupError):
    pass


class DeploymentFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    compiler: str
    deployed_bytecode: str = "0x"


@cache
def load_artifact(name: str) -> Artifact:
    """The artefact of contract `name` (e.g. "EnergyCoin"); read once per process."""
    path = BUILD_DIR / f"{name}.json"
    if not path.is_file():
        raise ArtifactNotFound(f"no artefact {path}: run `node contracts/build.mjs`")
    data = json.loads(path.read_text(encoding="utf-8"))
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        compiler=data["compiler"],
        deployed_bytecode=data.get("deployedBytecode", "0x"),
    )


def deploy_contract(
    w3: Web3,
    artifact: Artifact,
    sender_account: LocalAccount,
    *args: Any,
    timeout: float = 60.0,
) -> ChecksumAddress:
    """Deploy `artifact` with constructor `args`, signed locally by `sender_account`; return its address.

    Raises DeploymentFailed when the transaction reverts or leaves no code behind.
    """
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx = factory.constructor(*args).build_transaction(
        {
            "from": sender_account.address,
            "nonce": w3.eth.get_transaction_count(sender_account.address, "pending"),
            "chainId": w3.eth.chain_id,
        }
    )
    signed = sender_account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.rawTransaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    address = receipt.get("contractAddress")
    if receipt["status"] != 1 or not address:
        raise DeploymentFailed(f"deploying {artifact.name} failed in transaction {tx_hash.hex()}")
    if len(w3.eth.get_code(address)) == 0:
        raise DeploymentFailed(f"{artifact.name} at {address} has no code after deployment")
    return Web3.to_checksum_address(address)
