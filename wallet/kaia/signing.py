"""Signing and signer recovery for Kaia fee-delegated transactions (sender and fee payer roles).

Signatures are RFC 6979 deterministic (eth_keys, coincurve backend), so re-signing the same fields with
the same key gives identical bytes, which is what lets the tests compare against published vectors.
"""

from __future__ import annotations

from dataclasses import replace

from eth_account.signers.local import LocalAccount
from eth_keys.datatypes import PrivateKey
from eth_keys.datatypes import Signature as KeysSignature
from eth_keys.exceptions import BadSignature
from eth_keys.exceptions import ValidationError as KeysValidationError

from wallet.kaia.codec import (
    decode,
    encode,
    fee_payer_signing_hash,
    sender_signing_hash,
    sender_tx_hash,
    tx_hash,
)
from wallet.kaia.model import (
    SECP256K1_N,
    FeeDelegatedTx,
    InvalidSignature,
    KaiaTx,
    KaiaTxError,
    Signature,
    checksum_address,
)

Signer = PrivateKey | LocalAccount


def private_key_of(signer: Signer) -> PrivateKey:
    if isinstance(signer, PrivateKey):
        return signer
    if isinstance(signer, LocalAccount):
        # Reuse the account's parsed key: building a PrivateKey re-derives the public key every time.
        key_obj = getattr(signer, "_key_obj", None)
        return key_obj if isinstance(key_obj, PrivateKey) else PrivateKey(bytes(signer.key))
    raise TypeError(f"expected an eth_keys PrivateKey or a LocalAccount, got {type(signer).__name__}")


def _sign(key: PrivateKey, msg_hash: bytes, chain_id: int) -> Signature:
    sig = key.sign_msg_hash(msg_hash)
    return Signature(v=sig.v + 35 + 2 * chain_id, r=sig.r, s=sig.s)


def recover_signer(msg_hash: bytes, sig: Signature, chain_id: int) -> str:
    """The address whose key made `sig` over `msg_hash`, with the node's own checks: v must encode
    `chain_id`, and s must be in the lower half of the curve order (as go-ethereum's homestead rule)."""
    rec_id = sig.v - 35 - 2 * chain_id
    if rec_id not in (0, 1):
        raise InvalidSignature(f"v={sig.v} does not belong to chain id {chain_id}")
    if not (1 <= sig.r < SECP256K1_N and 1 <= sig.s <= SECP256K1_N // 2):
        raise InvalidSignature("r or s out of range (high s is not accepted)")
    try:
        public_key = KeysSignature(vrs=(rec_id, sig.r, sig.s)).recover_public_key_from_msg_hash(msg_hash)
    except (BadSignature, KeysValidationError) as exc:
        raise InvalidSignature(f"cannot recover a public key: {exc}") from None
    return str(public_key.to_checksum_address())


def signatures_chain_id(signatures: tuple[Signature, ...]) -> int:
    """The chain id every signature's v encodes; they must agree."""
    if not signatures:
        raise InvalidSignature("no signatures")
    ids = {sig.chain_id() for sig in signatures}
    if len(ids) != 1:
        raise InvalidSignature(f"signatures disagree on the chain id: {sorted(ids)}")
    return ids.pop()


def recover_senders(tx: KaiaTx, chain_id: int | None = None) -> tuple[str, ...]:
    """The signer of each sender signature. chain_id defaults to the one the signatures' v encodes.

    A legacy-key account has one signature whose signer equals tx.sender; decoupled or multisig
    accounts are validated by the node against their on-chain key, which we do not know here."""
    cid = signatures_chain_id(tx.signatures) if chain_id is None else chain_id
    msg_hash = sender_signing_hash(tx, cid)
    return tuple(recover_signer(msg_hash, sig, cid) for sig in tx.signatures)


def recover_fee_payers(tx: KaiaTx, chain_id: int | None = None) -> tuple[str, ...]:
    """The signer of each fee payer signature (equal to tx.fee_payer for a legacy-key fee payer)."""
    if tx.fee_payer is None:
        raise KaiaTxError("transaction has no fee payer part")
    cid = signatures_chain_id(tx.fee_payer_signatures) if chain_id is None else chain_id
    msg_hash = fee_payer_signing_hash(tx, cid)
    return tuple(recover_signer(msg_hash, sig, cid) for sig in tx.fee_payer_signatures)


def sign_as_sender(tx: KaiaTx, sender: Signer, chain_id: int) -> bytes:
    """Append the sender's signature and return the sender-signed raw bytes (what a wallet hands over).

    The key must derive tx.sender: our users have legacy keys (see KAIA.md, "Accounts and keys")."""
    key = private_key_of(sender)
    if key.public_key.to_checksum_address() != tx.sender:
        raise KaiaTxError(f"key does not belong to sender {tx.sender}")
    signed = replace(tx, signatures=(*tx.signatures, _sign(key, sender_signing_hash(tx, chain_id), chain_id)))
    return encode(replace(signed, fee_payer=None, fee_payer_signatures=()))


def sign_as_fee_payer(
    sender_raw: bytes,
    fee_payer: Signer,
    chain_id: int,
    *,
    fee_payer_address: str | None = None,
) -> FeeDelegatedTx:
    """Sign a sender-signed transaction as fee payer and return the raw transaction to submit.

    fee_payer_address is for a fee payer account whose key is decoupled from its address (a role-based
    account); it defaults to the key's own address. If the input already carries fee payer signatures
    (a multisig fee payer), they must be for the same fee payer and ours is appended.
    Sender signatures are only checked for their chain id here; check_policy verifies them fully.
    """
    tx = decode(sender_raw)
    if not tx.signatures:
        raise KaiaTxError("the sender has not signed this transaction")
    if signatures_chain_id(tx.signatures) != chain_id:
        raise InvalidSignature(
            f"sender signed for chain id {signatures_chain_id(tx.signatures)}, not {chain_id}"
        )
    key = private_key_of(fee_payer)
    payer = checksum_address(
        "fee_payer_address",
        fee_payer_address if fee_payer_address is not None else key.public_key.to_checksum_address(),
    )
    if tx.fee_payer is not None and tx.fee_payer != payer:
        raise KaiaTxError(f"transaction is already assigned to fee payer {tx.fee_payer}")
    sig = _sign(key, fee_payer_signing_hash(tx, chain_id, payer), chain_id)
    full = replace(tx, fee_payer=payer, fee_payer_signatures=(*tx.fee_payer_signatures, sig))
    return FeeDelegatedTx(
        tx=full, raw=encode(full), sender_tx_hash=sender_tx_hash(full), tx_hash=tx_hash(full)
    )
