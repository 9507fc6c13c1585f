"""EIP-712 typed data for the EnergyCoin tests (permit and ERC-3009), built and signed with eth-account.

The type definitions are wallet/'s (one definition: the contract tests check its field order against the
contract's typehashes); the domain separator is hashed by hand here as an independent check.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from eth_abi import encode
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from wallet.typed_data import EIP712_DOMAIN_FIELDS, SCHEMAS


class Signature(NamedTuple):
    v: int
    r: bytes
    s: bytes


def domain(name: str, chain_id: int, verifying_contract: str, version: str = "1") -> dict[str, Any]:
    return {"name": name, "version": version, "chainId": chain_id, "verifyingContract": verifying_contract}


def domain_separator(d: dict[str, Any]) -> bytes:
    """hashStruct(EIP712Domain), computed by hand as an independent check of the contract's value."""
    type_hash = keccak(
        text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                type_hash,
                keccak(text=d["name"]),
                keccak(text=d["version"]),
                d["chainId"],
                d["verifyingContract"],
            ],
        )
    )


def type_string(primary_type: str) -> str:
    fields = ",".join(f"{f['type']} {f['name']}" for f in SCHEMAS[primary_type])
    return f"{primary_type}({fields})"


def sign(account: LocalAccount, d: dict[str, Any], primary_type: str, message: dict[str, Any]) -> Signature:
    full_message = {
        "types": {"EIP712Domain": EIP712_DOMAIN_FIELDS, primary_type: SCHEMAS[primary_type]},
        "primaryType": primary_type,
        "domain": d,
        "message": message,
    }
    signed = account.sign_message(encode_typed_data(full_message=full_message))
    return Signature(signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"))


def authorization(
    sender: str, recipient: str, value: int, valid_after: int, valid_before: int, nonce: bytes
) -> dict[str, Any]:
    return {
        "from": sender,
        "to": recipient,
        "value": value,
        "validAfter": valid_after,
        "validBefore": valid_before,
        "nonce": nonce,
    }
