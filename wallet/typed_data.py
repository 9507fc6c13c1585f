"""EIP-712 typed data for the energy coin's gas-free authorisations (ERC-3009 and EIP-2612).

Builders return the JSON that wallets sign with `eth_signTypedData_v4`; `validate_typed_data` checks such
JSON (ours or a wallet's) before anything signs or relays it. uint256 values are decimal strings (JSON
numbers lose precision above 2**53 in JavaScript); bytes32 values are 0x-hex.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_address, keccak, to_checksum_address

UINT256_MAX = 2**256 - 1
# secp256k1 group order; signatures with s above n/2 are rejected by OpenZeppelin's ECDSA.recover.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
TOKEN_DOMAIN_VERSION = "1"

Field = dict[str, str]


def _fields(spec: str) -> list[Field]:
    """'address from,uint256 value' -> [{"name": "from", "type": "address"}, ...]"""
    return [{"name": n, "type": t} for t, n in (part.split(" ") for part in spec.split(","))]


# Field order is part of the typehash: these must match the contract exactly.
EIP712_DOMAIN_FIELDS = _fields("string name,string version,uint256 chainId,address verifyingContract")
SCHEMAS: dict[str, list[Field]] = {
    "TransferWithAuthorization": _fields(
        "address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce"
    ),
    "ReceiveWithAuthorization": _fields(
        "address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce"
    ),
    "CancelAuthorization": _fields("address authorizer,bytes32 nonce"),
    "Permit": _fields("address owner,address spender,uint256 value,uint256 nonce,uint256 deadline"),
}


class TypedDataError(ValueError):
    """Typed data that must not be signed or relayed; the message names what is wrong."""


class MalformedTypedData(TypedDataError):
    pass


class WrongChainId(TypedDataError):
    pass


class WrongContract(TypedDataError):
    pass


class WrongPrimaryType(TypedDataError):
    pass


class MalformedSignature(ValueError):
    pass


@dataclass(frozen=True)
class TokenDomain:
    """The EIP-712 domain of one deployed token: name = the token's name, version "1"."""

    name: str
    chain_id: int
    verifying_contract: str
    version: str = TOKEN_DOMAIN_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": _address("verifyingContract", self.verifying_contract),
        }


# ---- builders -------------------------------------------------------------------------------------------


def _typed_data(domain: TokenDomain, primary_type: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_FIELDS, primary_type: SCHEMAS[primary_type]},
        "domain": domain.to_json(),
        "primaryType": primary_type,
        "message": message,
    }


def _authorization(
    kind: str,
    domain: TokenDomain,
    from_: str,
    to: str,
    value: int,
    valid_after: int,
    valid_before: int,
    nonce: bytes,
) -> dict[str, Any]:
    if _uint("validBefore", valid_before) <= _uint("validAfter", valid_after):
        raise MalformedTypedData("validBefore must be later than validAfter")
    return _typed_data(
        domain,
        kind,
        {
            "from": _address("from", from_),
            "to": _address("to", to),
            "value": str(_uint("value", value)),
            "validAfter": str(valid_after),
            "validBefore": str(valid_before),
            "nonce": _bytes32_hex("nonce", nonce),
        },
    )


def transfer_with_authorization(
    domain: TokenDomain, *, from_: str, to: str, value: int, valid_after: int, valid_before: int, nonce: bytes
) -> dict[str, Any]:
    """ERC-3009: anyone may submit it; the token moves from `from_` to `to` inside the validity window."""
    return _authorization(
        "TransferWithAuthorization", domain, from_, to, value, valid_after, valid_before, nonce
    )


def receive_with_authorization(
    domain: TokenDomain, *, from_: str, to: str, value: int, valid_after: int, valid_before: int, nonce: bytes
) -> dict[str, Any]:
    """ERC-3009: only `to` may submit it, which stops front-running of a deposit into a contract."""
    return _authorization(
        "ReceiveWithAuthorization", domain, from_, to, value, valid_after, valid_before, nonce
    )


def cancel_authorization(domain: TokenDomain, *, authorizer: str, nonce: bytes) -> dict[str, Any]:
    return _typed_data(
        domain,
        "CancelAuthorization",
        {"authorizer": _address("authorizer", authorizer), "nonce": _bytes32_hex("nonce", nonce)},
    )


def permit(
    domain: TokenDomain, *, owner: str, spender: str, value: int, nonce: int, deadline: int
) -> dict[str, Any]:
    """EIP-2612: `nonce` is the contract's sequential `nonces(owner)`, read from the chain, never derived."""
    return _typed_data(
        domain,
        "Permit",
        {
            "owner": _address("owner", owner),
            "spender": _address("spender", spender),
            "value": str(_uint("value", value)),
            "nonce": str(_uint("nonce", nonce)),
            "deadline": str(_uint("deadline", deadline)),
        },
    )


_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


def nonce_for(kind: str, object_id: str | int) -> bytes:
    """The ERC-3009 nonce of one of our objects (e.g. ("transfer", transfer_id)).

    Deterministic, so relaying the same transfer twice fails on chain (the nonce is already used) instead of
    paying twice. `kind` has no "/" so the hashed string is unambiguous.
    """
    if not _KIND.match(kind):
        raise ValueError("kind must be lowercase letters, digits, '_', '.', '-' (at most 64)")
    if isinstance(object_id, bool) or not isinstance(object_id, str | int) or str(object_id) == "":
        raise ValueError("object_id must be a non-empty string or an integer")
    return keccak(text=f"essx/erc3009-nonce/v1/{kind}/{object_id}")


# ---- hashing and signatures -----------------------------------------------------------------------------


def signable(typed_data: Mapping[str, Any]) -> SignableMessage:
    """The EIP-191 version-0x01 message eth-account signs; raises MalformedTypedData if it cannot encode."""
    try:
        return encode_typed_data(full_message=dict(typed_data))
    except Exception as exc:  # eth-account raises ValueError, TypeError, KeyError, ValidationError...
        raise MalformedTypedData(f"typed data cannot be encoded: {exc}") from exc


def typed_data_digest(typed_data: Mapping[str, Any]) -> bytes:
    """keccak256(0x19 0x01 || domainSeparator || hashStruct(message)): what the contract's ecrecover sees.

    Our own schemas in the form we emit take a direct encoding (typehashes and domain separators computed
    once): eth-account's general encoder cost more CPU than the signature check beside it, on every order
    and transfer. Anything else goes through eth-account; both give the same digest (tests compare them)."""
    fast = _our_schema_digest(typed_data)
    if fast is not None:
        return fast
    message = signable(typed_data)
    return keccak(b"\x19" + message.version + message.header + message.body)


def _type_string(primary_type: str, fields: list[Field]) -> str:
    return primary_type + "(" + ",".join(f["type"] + " " + f["name"] for f in fields) + ")"


_DOMAIN_TYPEHASH = keccak(text=_type_string("EIP712Domain", EIP712_DOMAIN_FIELDS))
_TYPEHASHES = {name: keccak(text=_type_string(name, fields)) for name, fields in SCHEMAS.items()}
_TYPES = {name: {"EIP712Domain": EIP712_DOMAIN_FIELDS, name: fields} for name, fields in SCHEMAS.items()}
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,77}")
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")


def _word_uint(value: Any) -> bytes | None:
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        return None
    return value.to_bytes(32, "big")


def _word_address(value: Any) -> bytes | None:
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value) or not is_address(value):
        return None
    return bytes(12) + bytes.fromhex(value[2:])


@lru_cache(maxsize=64)
def _domain_separator(name: str, version: str, chain_id: bytes, contract: bytes) -> bytes:
    return keccak(_DOMAIN_TYPEHASH + keccak(text=name) + keccak(text=version) + chain_id + contract)


def _our_schema_digest(td: Mapping[str, Any]) -> bytes | None:
    """The digest of one of SCHEMAS with canonical values (decimal or int uint256, 0x-hex addresses and
    bytes32), or None: then eth-account encodes it (and says what is wrong, if anything)."""
    try:
        primary_type, types, domain, message = td["primaryType"], td["types"], td["domain"], td["message"]
    except (KeyError, TypeError):
        return None
    if not isinstance(primary_type, str) or primary_type not in SCHEMAS or types != _TYPES[primary_type]:
        return None
    if not isinstance(domain, Mapping) or set(domain) != {"name", "version", "chainId", "verifyingContract"}:
        return None
    name, version = domain["name"], domain["version"]
    chain_id, contract = _word_uint(domain["chainId"]), _word_address(domain["verifyingContract"])
    if not isinstance(name, str) or not isinstance(version, str) or chain_id is None or contract is None:
        return None
    fields = SCHEMAS[primary_type]
    if not isinstance(message, Mapping) or set(message) != {f["name"] for f in fields}:
        return None
    words = [_TYPEHASHES[primary_type]]
    for field in fields:
        value = message[field["name"]]
        if field["type"] == "address":
            word = _word_address(value)
        elif field["type"] == "uint256":
            word = _word_uint(value)
        elif isinstance(value, str) and _HEX32.fullmatch(value):  # bytes32
            word = bytes.fromhex(value[2:])
        else:
            word = None
        if word is None:
            return None
        words.append(word)
    separator = _domain_separator(name, version, chain_id, contract)
    return keccak(b"\x19\x01" + separator + keccak(b"".join(words)))


def split_signature(signature: bytes | str) -> tuple[int, bytes, bytes]:
    """65-byte r||s||v -> (v, r, s) for the contract call, v in {27, 28}.

    Accepts v as 0/1 too (some signers emit that) and rejects high-s signatures, which OpenZeppelin's
    ECDSA refuses: better to fail here than in a reverted relay transaction.
    """
    sig = _signature_bytes(signature)
    r, s, v = sig[:32], sig[32:64], sig[64]
    if v in (0, 1):
        v += 27
    if v not in (27, 28):
        raise MalformedSignature(f"signature v must be 27 or 28, got {v}")
    s_int = int.from_bytes(s, "big")
    if not 0 < s_int <= SECP256K1_N // 2:
        raise MalformedSignature("signature s is out of range (high-s signatures are malleable)")
    if not 0 < int.from_bytes(r, "big") < SECP256K1_N:
        raise MalformedSignature("signature r is out of range")
    return v, r, s


def normalize_signature(signature: bytes | str) -> bytes:
    """The canonical 65-byte form (v = 27/28) after the checks of `split_signature`."""
    v, r, s = split_signature(signature)
    return r + s + bytes([v])


def _signature_bytes(signature: bytes | str) -> bytes:
    if isinstance(signature, str):
        text = signature.removeprefix("0x")
        if not re.fullmatch(r"[0-9a-fA-F]*", text):
            raise MalformedSignature("signature is not hex")
        signature = bytes.fromhex(text) if len(text) % 2 == 0 else b""
    if not isinstance(signature, bytes | bytearray) or len(signature) != 65:
        raise MalformedSignature("signature must be 65 bytes (r, s, v)")
    return bytes(signature)


# ---- validation ------------------------------------------------------------------------------------------


def validate_typed_data(
    td: Any,
    expected_chain_id: int,
    allowed_contracts: Iterable[str],
    expected_primary_type: str | None = None,
) -> None:
    """Check typed data before signing or relaying it.

    It must be exactly one of our schemas (the contract's typehash), for our chain and one of our
    contracts, with every message value well-formed. `expected_primary_type=None` accepts any of them.
    """
    if not isinstance(td, Mapping):
        raise MalformedTypedData("typed data must be a JSON object")
    if set(td) != {"types", "domain", "primaryType", "message"}:
        raise MalformedTypedData("typed data must have exactly: types, domain, primaryType, message")
    primary_type = td["primaryType"]
    if expected_primary_type is not None and primary_type != expected_primary_type:
        raise WrongPrimaryType(f"primaryType is {primary_type!r}, expected {expected_primary_type!r}")
    if primary_type not in SCHEMAS:
        raise WrongPrimaryType(f"primaryType {primary_type!r} is not one we sign")
    validate_domain(td["domain"], expected_chain_id, allowed_contracts)
    if td["types"] != _TYPES[primary_type]:
        raise MalformedTypedData(f"types do not match the contract's {primary_type} typehash")
    _validate_message(primary_type, td["message"])


def validate_domain(domain: Any, expected_chain_id: int, allowed_contracts: Iterable[str]) -> None:
    if not isinstance(domain, Mapping) or set(domain) != {"name", "version", "chainId", "verifyingContract"}:
        raise MalformedTypedData("domain must have exactly: name, version, chainId, verifyingContract")
    if not isinstance(domain["name"], str) or domain["version"] != TOKEN_DOMAIN_VERSION:
        raise MalformedTypedData(f"domain name must be a string and version {TOKEN_DOMAIN_VERSION!r}")
    chain_id = _as_uint("chainId", domain["chainId"])
    if chain_id != expected_chain_id:
        raise WrongChainId(f"domain chainId is {chain_id}, expected {expected_chain_id}")
    contract = _check_address("verifyingContract", domain["verifyingContract"])
    # Compared in lower case: checksumming costs a keccak per address, and signing is on a hot path.
    if contract.lower() not in {a.lower() for a in allowed_contracts}:
        raise WrongContract(f"verifyingContract {contract} is not one of our deployed contracts")


def _validate_message(primary_type: str, message: Any) -> None:
    fields = SCHEMAS[primary_type]
    if not isinstance(message, Mapping) or set(message) != {f["name"] for f in fields}:
        raise MalformedTypedData(f"message must have exactly the {primary_type} fields")
    for field in fields:
        name, value = field["name"], message[field["name"]]
        if field["type"] == "address":
            _check_address(name, value)
        elif field["type"] == "uint256":
            _as_uint(name, value)
        else:  # bytes32
            if not isinstance(value, str) or not _HEX32.fullmatch(value):
                raise MalformedTypedData(f"{name} must be 0x-hex of exactly 32 bytes")
    if "validBefore" in message and _as_uint("validBefore", message["validBefore"]) <= _as_uint(
        "validAfter", message["validAfter"]
    ):
        raise MalformedTypedData("validBefore must be later than validAfter")


# ---- value checks ------------------------------------------------------------------------------------------


def _check_address(name: str, value: Any) -> str:
    """A 0x-hex address; a mixed-case one must carry a valid EIP-55 checksum."""
    if not isinstance(value, str) or not is_address(value):
        raise MalformedTypedData(f"{name} is not an address")
    return value


def _address(name: str, value: Any) -> str:
    return _checksummed(_check_address(name, value))


@lru_cache(maxsize=4096)
def _checksummed(address: str) -> str:
    """EIP-55 form of a valid address: a keccak each, and every order and transfer names the same few
    contracts and the wallets of the users active now."""
    return str(to_checksum_address(address))


def _uint(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        raise MalformedTypedData(f"{name} must be an integer in uint256 range")
    return value


def _as_uint(name: str, value: Any) -> int:
    """JSON uint256: an int or a decimal string (what we emit); 0x-hex strings are accepted as wallets do."""
    if isinstance(value, str):
        if _DECIMAL.fullmatch(value):
            value = int(value)
        elif re.fullmatch(r"0x[0-9a-fA-F]{1,64}", value):
            value = int(value, 16)
        else:
            raise MalformedTypedData(f"{name} must be a decimal string or an integer")
    return _uint(name, value)


def _bytes32_hex(name: str, value: bytes) -> str:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise MalformedTypedData(f"{name} must be exactly 32 bytes")
    return "0x" + bytes(value).hex()
