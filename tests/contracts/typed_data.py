"""EIP-712 typed data for the EnergyCoin tests (permit and ERC-3009), built and signed with eth-account.

Test-only on purpose: the production typed-data module lives in wallet/ and is tested against these
contracts separately.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from eth_abi import encode
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

EIP712_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
AUTHORIZATION_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
TYPES: dict[str, list[dict[str, str]]] = {
    "Permit": [
        {"name": "owner", "type": "address"},
        {"name": "spender", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ],
    "TransferWithAuthorization": AUTHORIZATION_FIELDS,
    "ReceiveWithAuthorization": AUTHORIZATION_FIELDS,
    "CancelAuthorization": [
        {"name": "authorizer", "type": "address"},
        {"name": "nonce", "type": "bytes32"},
    ],
}


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
    fields = ",".join(f"{f['type']} {f['name']}" for f in TYPES[primary_type])
    return f"{primary_type}({fields})"


def sign(account: LocalAccount, d: dict[str, Any], primary_type: str, message: dict[str, Any]) -> Signature:
    full_message = {
        "types": {"EIP712Domain": EIP712_DOMAIN_FIELDS, primary_type: TYPES[primary_type]},
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
