"""The signing interface: an address that signs transactions and typed data, and never exports its key.

`LocalSigner` holds an eth_keys `PrivateKey` object (deriving it from bytes or hex on every call costs a
public-key computation each time). It refuses anything not bound to our chain and our contracts, and checks
each signature recovers to its own address before handing it out: a wrong signature caught here costs
nothing, one caught on chain costs a reverted relay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn, Protocol, runtime_checkable

import rlp
from coincurve import PublicKey
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.datatypes import PrivateKey
from eth_utils import is_checksum_address, keccak, to_checksum_address

from wallet.typed_data import (
    SECP256K1_N,
    MalformedSignature,
    TypedDataError,
    split_signature,
    typed_data_digest,
    validate_typed_data,
)


class SigningRefused(Exception):
    """The request is not something this signer signs; the message says why (never the key)."""


class SigningFailed(RuntimeError):
    """A signature did not recover to the signer's own address (a broken key backend, never expected)."""


@dataclass(frozen=True)
class SignedTransaction:
    raw: bytes  # stored before broadcasting, so re-sending reuses the same bytes
    hash: bytes


@runtime_checkable
class Signer(Protocol):
    @property
    def address(self) -> str: ...

    def sign_transaction(self, tx: Mapping[str, Any]) -> SignedTransaction: ...

    def sign_typed_data(self, typed_data: Mapping[str, Any]) -> bytes: ...


class LocalSigner:
    """A key held in this process, for one chain and an allow-list of our deployed contracts."""

    __slots__ = ("_address", "_allowed_contracts", "_key", "_public_key", "chain_id")

    def __init__(
        self, key: PrivateKey | LocalAccount, *, chain_id: int, allowed_contracts: Iterable[str]
    ) -> None:
        if isinstance(key, LocalAccount):
            key = PrivateKey(key.key)
        if not isinstance(key, PrivateKey):
            raise TypeError("key must be an eth_keys PrivateKey or a LocalAccount")
        self._key = key
        self._public_key = key.public_key
        # EIP-55 through the cache below: a custodial wallet's signer is opened for each of its spends, and
        # eth_utils' checksum (a second keccak and a loop over the hex) cost as much as deriving the key.
        self._address = _checksummed_address(self._public_key.to_canonical_address())
        self.chain_id = chain_id
        self._allowed_contracts = _checksummed(tuple(allowed_contracts))

    @classmethod
    def from_key_bytes(cls, key: bytes, *, chain_id: int, allowed_contracts: Iterable[str]) -> LocalSigner:
        # Our own message: eth_keys' would echo the value into logs.
        if not isinstance(key, bytes) or len(key) != 32 or not 0 < int.from_bytes(key, "big") < SECP256K1_N:
            raise ValueError("not a valid secp256k1 private key (32 bytes, 0 < k < n)")
        private_key = PrivateKey(key)
        return cls(private_key, chain_id=chain_id, allowed_contracts=allowed_contracts)

    @property
    def address(self) -> str:
        return self._address

    @property
    def allowed_contracts(self) -> frozenset[str]:
        return self._allowed_contracts

    def __repr__(self) -> str:
        return f"LocalSigner(address={self._address}, chain_id={self.chain_id})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # A pickled signer would be the key in plain bytes (in a cache, a task queue...).
        raise TypeError("LocalSigner cannot be pickled")

    def sign_transaction(self, tx: Mapping[str, Any]) -> SignedTransaction:
        """Sign an Ethereum-type transaction (legacy, 2930, 1559) for our chain only.

        A transaction without chainId has no replay protection across chains, so it is refused too.
        """
        if tx.get("chainId") != self.chain_id:
            raise SigningRefused(f"transaction chainId is {tx.get('chainId')!r}, expected {self.chain_id}")
        sender = tx.get("from")
        if sender is not None and str(sender).lower() != self._address.lower():
            raise SigningRefused(f"transaction from {sender} is not this signer ({self._address})")
        # eth-account compares "from" case-sensitively; we checked it ourselves.
        unsigned = {k: v for k, v in tx.items() if k != "from"}
        fields = _dynamic_fee_fields(unsigned)
        if fields is not None:
            return self._sign_dynamic_fee(fields)
        signed = Account.sign_transaction(unsigned, self._key)
        raw = bytes(signed.rawTransaction)
        if Account.recover_transaction(raw) != self._address:
            raise SigningFailed("signed transaction does not recover to the signer's address")
        return SignedTransaction(raw=raw, hash=bytes(signed.hash))

    def _sign_dynamic_fee(self, fields: list[Any]) -> SignedTransaction:
        """An EIP-1559 transaction signed here: keccak(0x02 || rlp(fields)), then 0x02 || rlp(fields, v, r, s)
        (EIP-2718/1559), byte for byte what eth-account produces (tests/wallet/test_signer.py), for a
        quarter of its CPU: eth-account builds, validates and re-parses the transaction through several
        object layers, and its recovery check decoded the signed bytes again. The check stays, on the
        signature and the hash it signed."""
        digest = keccak(b"\x02" + rlp.encode(fields))
        signature = self._key.sign_msg_hash(digest)
        if signature.recover_public_key_from_msg_hash(digest) != self._public_key:
            raise SigningFailed("signed transaction does not recover to the signer's address")
        raw = b"\x02" + rlp.encode([*fields, signature.v, signature.r, signature.s])
        return SignedTransaction(raw=raw, hash=keccak(raw))

    def sign_typed_data(self, typed_data: Mapping[str, Any]) -> bytes:
        """Sign one of our EIP-712 schemas (see typed_data.SCHEMAS); returns r || s || v with v = 27/28."""
        return self.sign_typed_data_with_digest(typed_data)[0]

    def sign_typed_data_with_digest(self, typed_data: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """As `sign_typed_data`, also returning the EIP-712 digest signed (callers record it)."""
        try:
            validate_typed_data(typed_data, self.chain_id, self._allowed_contracts)
        except TypedDataError as exc:
            raise SigningRefused(str(exc)) from exc
        digest = typed_data_digest(typed_data)
        signature = self._key.sign_msg_hash(digest)
        if signature.recover_public_key_from_msg_hash(digest) != self._public_key:
            raise SigningFailed("typed-data signature does not recover to the signer's address")
        raw = signature.to_bytes()  # r || s || v with v = 0/1
        return raw[:64] + bytes([raw[64] + 27]), digest


_DYNAMIC_FEE_KEYS = frozenset(
    ("type", "chainId", "nonce", "maxPriorityFeePerGas", "maxFeePerGas", "gas", "to", "value", "data")
)

_REQUIRED_KEYS = frozenset(("chainId", "nonce", "maxPriorityFeePerGas", "maxFeePerGas", "gas"))


def _dynamic_fee_fields(tx: Mapping[str, Any]) -> list[Any] | None:
    """The RLP fields of an EIP-1559 transaction as the relayer builds it (integers, hex strings, no access
    list), else None: anything else (another type, an access list, other value types) is left to
    eth-account, which validates it."""
    if tx.get("type") not in (2, "0x2") or not _DYNAMIC_FEE_KEYS.issuperset(tx):
        return None
    numbers = [
        tx.get(k, 0) for k in ("chainId", "nonce", "maxPriorityFeePerGas", "maxFeePerGas", "gas", "value")
    ]
    if not _REQUIRED_KEYS.issubset(tx) or any(type(n) is not int or n < 0 for n in numbers):
        return None
    if tx.get("to") and not is_checksum_address(tx["to"]):  # eth-account refuses it: its message then
        return None
    try:
        to = _hex_bytes(tx.get("to") or "0x")
        data = _hex_bytes(tx.get("data") or "0x")
    except ValueError:
        return None
    if len(to) not in (0, 20):
        return None
    chain_id, nonce, tip, max_fee, gas, value = numbers
    return [chain_id, nonce, tip, max_fee, gas, to, value, data, []]


def _hex_bytes(value: object) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError("not a 0x hex string")
    return bytes.fromhex(value[2:])


@lru_cache(maxsize=64)
def _checksummed(addresses: tuple[str, ...]) -> frozenset[str]:
    """The allow-list in checksum form; the same few contract addresses come with every signer opened."""
    return frozenset(to_checksum_address(a) for a in addresses)


def recover_typed_data(typed_data: Mapping[str, Any], signature: bytes | str) -> str:
    """The checksummed address that signed this typed data (EIP-712). Validate the typed data separately."""
    return _recover(typed_data_digest(typed_data), signature)


def recover_digest(digest: bytes, signature: bytes | str) -> str:
    """The checksummed address that signed this EIP-712 digest (see typed_data.typed_data_digest)."""
    return _recover(digest, signature)


def recover_personal_message(message: str, signature: bytes | str) -> str:
    """The checksummed address that signed `message` with personal_sign (EIP-191 version 0x45)."""
    signable = encode_defunct(text=message)
    return _recover(keccak(b"\x19" + signable.version + signable.header + signable.body), signature)


def _recover(digest: bytes, signature: bytes | str) -> str:
    v, r, s = split_signature(signature)
    if len(digest) != 32:
        raise MalformedSignature("the signed digest must be 32 bytes")
    try:
        # libsecp256k1 through coincurve (what eth_keys' coincurve backend calls, without its objects and
        # validation layers: a third of the CPU of a signature check)
        public = PublicKey.from_signature_and_message(r + s + bytes([v - 27]), digest, hasher=None)
    except ValueError as exc:
        raise MalformedSignature("signature does not recover to any public key") from exc
    return _checksummed_address(keccak(public.format(compressed=False)[1:])[12:])


@lru_cache(maxsize=4096)
def _checksummed_address(raw: bytes) -> str:
    """EIP-55 form of a 20-byte address (a keccak each; the same wallets sign again and again)."""
    return str(to_checksum_address(raw))
