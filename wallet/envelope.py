"""Envelope encryption of secrets at rest (custodial wallet keys).

Each secret gets its own random AES-256-GCM data key; the data key is wrapped (AES-256-GCM again) by a
master key kept outside the database. Rotating the master key re-wraps 48 bytes per secret and never
touches the ciphertext. Associated data (see `aad_for`) binds a ciphertext to its user and address, so a
row copied onto another user does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_utils import is_address

ENVELOPE_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12  # the GCM standard nonce; random nonces are safe far beyond one use per data key
KEY_ID_BYTES = 8
WRAPPED_KEY_BYTES = KEY_BYTES + 16  # data key + GCM tag
TAG_BYTES = 16
# Domain separation: a data-layer ciphertext can never be passed off as a wrapped key or the reverse.
_DATA_AAD = b"essx/envelope/data/v1\x00"
_WRAP_AAD = b"essx/envelope/wrap/v1\x00"


class EnvelopeError(Exception):
    """Base class; messages name key ids and lengths, never key material."""


class InvalidMasterKey(EnvelopeError, ValueError):
    pass


class MalformedSealedSecret(EnvelopeError, ValueError):
    pass


class UnsealError(EnvelopeError):
    """Authentication failed: wrong master key, wrong associated data, or a tampered record."""


class WrongMasterKey(UnsealError):
    """The record names another master key id than the one supplied."""


class MasterKey:
    """The server's 256-bit key-encryption key; `key_id` (public) names it in every sealed record."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise InvalidMasterKey(f"master key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)  # holds the key; we keep no other reference
        self.key_id = hashlib.sha256(key).digest()[:KEY_ID_BYTES].hex()

    @classmethod
    def from_setting(cls, value: str) -> MasterKey:
        """Read the setting: 64 hex digits (optionally 0x) or base64 (standard or URL-safe) of 32 bytes."""
        text = value.strip()
        if re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", text):
            return cls(bytes.fromhex(text.removeprefix("0x")))
        key = _b64decode(text)
        if key is None or len(key) != KEY_BYTES:
            raise InvalidMasterKey(f"master key setting must be hex or base64 of {KEY_BYTES} random bytes")
        return cls(key)

    @staticmethod
    def generate_setting() -> str:
        """A new random master key in setting form (base64), for `essx` key generation."""
        return base64.b64encode(os.urandom(KEY_BYTES)).decode()

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    def __reduce__(self) -> Any:
        raise TypeError("MasterKey cannot be pickled")


@dataclass(frozen=True, repr=False)
class SealedSecret:
    ciphertext: bytes  # plaintext encrypted under the data key, GCM tag appended
    nonce: bytes
    wrapped_key: bytes  # data key encrypted under the master key, GCM tag appended
    wrap_nonce: bytes
    master_key_id: str  # hex
    version: int = ENVELOPE_VERSION

    def __post_init__(self) -> None:
        if self.version != ENVELOPE_VERSION:
            raise MalformedSealedSecret(f"unsupported envelope version {self.version}")
        if len(self.nonce) != NONCE_BYTES or len(self.wrap_nonce) != NONCE_BYTES:
            raise MalformedSealedSecret(f"nonces must be {NONCE_BYTES} bytes")
        if len(self.wrapped_key) != WRAPPED_KEY_BYTES:
            raise MalformedSealedSecret(f"wrapped key must be {WRAPPED_KEY_BYTES} bytes")
        if len(self.ciphertext) < TAG_BYTES:
            raise MalformedSealedSecret("ciphertext is shorter than its authentication tag")
        if not re.fullmatch(rf"[0-9a-f]{{{2 * KEY_ID_BYTES}}}", self.master_key_id):
            raise MalformedSealedSecret("master key id must be 16 lowercase hex digits")

    def __repr__(self) -> str:
        return (
            f"SealedSecret(version={self.version}, master_key_id={self.master_key_id!r}, "
            f"ciphertext=<{len(self.ciphertext)} bytes>)"
        )

    def to_bytes(self) -> bytes:
        """version (1) | key id (8) | nonce (12) | wrap nonce (12) | wrapped key (48) | ciphertext."""
        return (
            bytes([self.version])
            + bytes.fromhex(self.master_key_id)
            + self.nonce
            + self.wrap_nonce
            + self.wrapped_key
            + self.ciphertext
        )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> SealedSecret:
        data = bytes(data)  # database drivers may hand back a memoryview
        header = 1 + KEY_ID_BYTES + 2 * NONCE_BYTES + WRAPPED_KEY_BYTES
        if len(data) < header + TAG_BYTES:
            raise MalformedSealedSecret("sealed secret is too short")
        if data[0] != ENVELOPE_VERSION:
            raise MalformedSealedSecret(f"unsupported envelope version {data[0]}")
        at = 1 + KEY_ID_BYTES
        return cls(
            version=data[0],
            master_key_id=data[1:at].hex(),
            nonce=data[at : at + NONCE_BYTES],
            wrap_nonce=data[at + NONCE_BYTES : at + 2 * NONCE_BYTES],
            wrapped_key=data[at + 2 * NONCE_BYTES : header],
            ciphertext=data[header:],
        )

    def to_text(self) -> str:
        """URL-safe base64 of `to_bytes()`: fits a text or JSON column."""
        return base64.urlsafe_b64encode(self.to_bytes()).decode()

    @classmethod
    def from_text(cls, text: str) -> SealedSecret:
        data = _b64decode(text) if isinstance(text, str) else None
        if data is None:
            raise MalformedSealedSecret("sealed secret is not base64")
        return cls.from_bytes(data)


def seal(master: MasterKey, plaintext: bytes, aad: bytes) -> SealedSecret:
    if not isinstance(plaintext, bytes) or not isinstance(aad, bytes):
        raise TypeError("plaintext and aad must be bytes")
    data_key = AESGCM.generate_key(bit_length=256)
    nonce, wrap_nonce = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _DATA_AAD + aad)
    wrapped_key = master._aead.encrypt(wrap_nonce, data_key, _wrap_aad(master.key_id, aad))
    return SealedSecret(ciphertext, nonce, wrapped_key, wrap_nonce, master.key_id)


def open_sealed(master: MasterKey, sealed: SealedSecret, aad: bytes) -> bytes:
    data_key = _unwrap(master, sealed, aad)
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, _DATA_AAD + aad)
    except InvalidTag:
        raise UnsealError("ciphertext failed authentication (wrong associated data or tampered)") from None


def rewrap(old_master: MasterKey, new_master: MasterKey, sealed: SealedSecret, aad: bytes) -> SealedSecret:
    """Re-wrap the data key under `new_master`; the ciphertext is unchanged.

    Already under `new_master`: returned as is, so an interrupted rotation can simply run again.
    """
    if sealed.master_key_id == new_master.key_id:
        return sealed
    data_key = _unwrap(old_master, sealed, aad)
    wrap_nonce = os.urandom(NONCE_BYTES)
    wrapped_key = new_master._aead.encrypt(wrap_nonce, data_key, _wrap_aad(new_master.key_id, aad))
    return replace(sealed, wrapped_key=wrapped_key, wrap_nonce=wrap_nonce, master_key_id=new_master.key_id)


def aad_for(user_id: object, address: str) -> bytes:
    """Associated data binding a wallet key's ciphertext to its owner and address (case-insensitive)."""
    if not isinstance(address, str) or not is_address(address):
        raise ValueError("address is not an Ethereum address")
    # JSON array: unambiguous whatever characters the user id contains.
    return json.dumps(["essx/wallet-key/v1", str(user_id), address.lower()], separators=(",", ":")).encode()


def _b64decode(text: str) -> bytes | None:
    """Strict base64, standard or URL-safe alphabet (a lenient decoder silently drops stray characters)."""
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None


def _wrap_aad(key_id: str, aad: bytes) -> bytes:
    return _WRAP_AAD + bytes.fromhex(key_id) + aad


def _unwrap(master: MasterKey, sealed: SealedSecret, aad: bytes) -> bytes:
    if sealed.master_key_id != master.key_id:
        raise WrongMasterKey(f"secret is sealed under master key {sealed.master_key_id}, not {master.key_id}")
    try:
        return master._aead.decrypt(sealed.wrap_nonce, sealed.wrapped_key, _wrap_aad(master.key_id, aad))
    except InvalidTag:
        raise UnsealError("wrapped data key failed authentication (wrong aad or tampered)") from None
