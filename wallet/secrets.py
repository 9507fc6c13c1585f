"""Custodial wallet keys: generated from the OS random source, sealed at rest, opened into a signer.

The plaintext key exists only inside these functions and the returned signer's key object (Python cannot
reliably wipe memory, so the aim is to keep it short-lived and out of logs, reprs and pickles).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from eth_keys.datatypes import PrivateKey

from wallet.envelope import MasterKey, SealedSecret, aad_for, open_sealed, seal
from wallet.signer import LocalSigner
from wallet.typed_data import SECP256K1_N


class KeyAddressMismatch(Exception):
    """An opened key derives another address than the one stored beside it (a corrupted row)."""


@dataclass(frozen=True)
class CustodialKey:
    address: str  # checksummed; stored in clear so the key need not be opened to show it
    sealed: SealedSecret


def new_custodial_key(master: MasterKey, user_id: object) -> CustodialKey:
    while True:
        candidate = os.urandom(32)
        # A valid secp256k1 key is 0 < k < n; a miss has probability ~2**-128.
        if 0 < int.from_bytes(candidate, "big") < SECP256K1_N:
            break
    address = str(PrivateKey(candidate).public_key.to_checksum_address())
    return CustodialKey(address=address, sealed=seal(master, candidate, aad_for(user_id, address)))


def open_signer(
    master: MasterKey,
    key: CustodialKey,
    user_id: object,
    *,
    chain_id: int,
    allowed_contracts: Iterable[str],
) -> LocalSigner:
    """Open a user's sealed key into a signer; only call after the PIN/OTP authorisation succeeded."""
    plaintext = open_sealed(master, key.sealed, aad_for(user_id, key.address))
    signer = LocalSigner.from_key_bytes(plaintext, chain_id=chain_id, allowed_contracts=allowed_contracts)
    if signer.address.lower() != key.address.lower():
        raise KeyAddressMismatch(f"sealed key does not derive the stored address {key.address}")
    return signer
