"""Byte-exact RLP codec and hashes for Kaia fee-delegated transactions.

Written on `rlp` directly instead of web3py-ext: web3py-ext hashes the chain id as two fixed bytes
(right only for chain ids 256..65535) and has no partial fee delegation types. Here every integer,
the chain id included, is canonical RLP, as the Kaia node encodes it.
"""

from __future__ import annotations

from typing import Any

import rlp
from eth_utils import keccak
from rlp.exceptions import RLPException

from wallet.kaia.model import (
    ADDRESS_FIELDS,
    FIELDS,
    INT_BOUNDS,
    NULLABLE_TO,
    KaiaTx,
    KaiaTxError,
    Signature,
    TxType,
    checksum_address,
)

# caver-js hands over a sender-signed transaction in the full layout with a placeholder fee payer: the
# zero address and the signature list [[0x01, 0x, 0x]]. Kaia's ethers-ext reads that as "no fee payer yet";
# so does `decode`, here and nowhere else.
PLACEHOLDER_FEE_PAYER = "0x" + "00" * 20
PLACEHOLDER_FEE_PAYER_SIGNATURES = (Signature(1, 0, 0),)


def _address_bytes(address: str | None) -> bytes:
    return b"" if address is None else bytes.fromhex(address[2:])


def _field_item(tx: KaiaTx, name: str) -> Any:
    value = getattr(tx, name)
    if name in ADDRESS_FIELDS:
        return _address_bytes(value)
    if name == "human_readable":
        return int(value)  # Go encodes a bool as 0x01 / 0x80, which is what RLP gives for 1 / 0
    return value


def _typed_fields(tx: KaiaTx) -> list[Any]:
    return [_field_item(tx, name) for name in FIELDS[tx.type]]


def _signature_items(signatures: tuple[Signature, ...]) -> list[list[int]]:
    return [[sig.v, sig.r, sig.s] for sig in signatures]


def _check_chain_id(chain_id: int) -> None:
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
        raise KaiaTxError(f"chain id must be a positive integer: {chain_id!r}")


def encode_sender_signed(tx: KaiaTx) -> bytes:
    """`type || rlp([...fields, senderSignatures])`: what a sender hands to the fee payer."""
    return bytes([tx.type]) + rlp.encode([*_typed_fields(tx), _signature_items(tx.signatures)])


def _encode_full(tx: KaiaTx, fee_payer: str, fee_payer_signatures: tuple[Signature, ...]) -> bytes:
    items = [
        *_typed_fields(tx),
        _signature_items(tx.signatures),
        _address_bytes(fee_payer),
        _signature_items(fee_payer_signatures),
    ]
    return bytes([tx.type]) + rlp.encode(items)


def encode(tx: KaiaTx) -> bytes:
    """The full encoding when the fee payer is set, otherwise the sender-signed one."""
    if tx.fee_payer is None:
        return encode_sender_signed(tx)
    return _encode_full(tx, tx.fee_payer, tx.fee_payer_signatures)


def _unsigned_rlp(tx: KaiaTx) -> bytes:
    return rlp.encode([int(tx.type), *_typed_fields(tx)])


def sender_signing_payload(tx: KaiaTx, chain_id: int) -> bytes:
    """`rlp([rlp([type, ...fields]), chainId, 0, 0])`, the preimage of the sender's signing hash."""
    _check_chain_id(chain_id)
    return rlp.encode([_unsigned_rlp(tx), chain_id, 0, 0])


def fee_payer_signing_payload(tx: KaiaTx, chain_id: int, fee_payer: str | None = None) -> bytes:
    """`rlp([rlp([type, ...fields]), feePayer, chainId, 0, 0])`; fee_payer defaults to tx.fee_payer."""
    _check_chain_id(chain_id)
    payer = fee_payer if fee_payer is not None else tx.fee_payer
    if payer is None:
        raise KaiaTxError("no fee payer to hash for")
    payer_bytes = _address_bytes(checksum_address("fee_payer", payer))
    return rlp.encode([_unsigned_rlp(tx), payer_bytes, chain_id, 0, 0])


def sender_signing_hash(tx: KaiaTx, chain_id: int) -> bytes:
    return keccak(sender_signing_payload(tx, chain_id))


def fee_payer_signing_hash(tx: KaiaTx, chain_id: int, fee_payer: str | None = None) -> bytes:
    return keccak(fee_payer_signing_payload(tx, chain_id, fee_payer))


def sender_tx_hash(tx: KaiaTx) -> bytes:
    return keccak(encode_sender_signed(tx))


def tx_hash(tx: KaiaTx) -> bytes:
    """keccak of the full encoding: the hash the node reports. Needs the fee payer part."""
    if tx.fee_payer is None:
        raise KaiaTxError("no fee payer yet: only the sender tx hash is defined")
    return keccak(encode(tx))


# --- decoding -------------------------------------------------------------------------------------


def _as_bytes(item: Any, name: str) -> bytes:
    if not isinstance(item, bytes):
        raise KaiaTxError(f"{name}: expected a byte string, got a list")
    return item


def _as_int(item: Any, name: str) -> int:
    raw = _as_bytes(item, name)
    if raw[:1] == b"\x00":
        raise KaiaTxError(f"{name}: integer with leading zero bytes")
    return int.from_bytes(raw, "big")


def _as_address(item: Any, name: str, nullable: bool) -> str | None:
    raw = _as_bytes(item, name)
    if raw == b"" and nullable:
        return None
    if len(raw) != 20:
        raise KaiaTxError(f"{name}: expected 20 bytes, got {len(raw)}")
    return "0x" + raw.hex()


def _as_signatures(item: Any, name: str) -> tuple[Signature, ...]:
    if not isinstance(item, list):
        raise KaiaTxError(f"{name}: expected a list of [v, r, s]")
    sigs = []
    for entry in item:
        if not isinstance(entry, list) or len(entry) != 3:
            raise KaiaTxError(f"{name}: each signature must be [v, r, s]")
        v, r, s = (_as_int(x, name) for x in entry)
        sigs.append(Signature(v, r, s))
    return tuple(sigs)


def _decode_field(tx_type: TxType, name: str, item: Any) -> Any:
    if name in ADDRESS_FIELDS:
        return _as_address(item, name, nullable=name == "to" and tx_type in NULLABLE_TO)
    if name in INT_BOUNDS:
        return _as_int(item, name)
    if name == "human_readable":
        raw = _as_bytes(item, name)
        if raw not in (b"", b"\x01"):
            raise KaiaTxError("human_readable must encode a bool")
        return raw == b"\x01"
    return _as_bytes(item, name)


def decode(raw: bytes) -> KaiaTx:
    """Decode a sender-signed or fully signed raw transaction. Only canonical encodings are accepted,
    so `encode(decode(raw)) == raw` holds, with one exception: caver-js's placeholder fee payer (zero
    address, signatures [[0x01, 0x, 0x]]) decodes as no fee payer, and re-encodes in the sender-signed
    form, as Kaia's ethers-ext does."""
    if not isinstance(raw, bytes | bytearray) or len(raw) < 2:
        raise KaiaTxError("raw transaction must be non-empty bytes")
    raw = bytes(raw)
    try:
        tx_type = TxType(raw[0])
    except ValueError:
        raise KaiaTxError(f"not a fee-delegated Kaia type: 0x{raw[0]:02x}") from None
    try:
        items = rlp.decode(raw[1:])
    except RLPException as exc:
        raise KaiaTxError(f"bad RLP: {exc}") from None
    if not isinstance(items, list):
        raise KaiaTxError("payload is not an RLP list")
    names = FIELDS[tx_type]
    if len(items) not in (len(names) + 1, len(names) + 3):
        raise KaiaTxError(
            f"{tx_type.name}: {len(items)} items, expected {len(names) + 1} or {len(names) + 3}"
        )
    kwargs = {name: _decode_field(tx_type, name, item) for name, item in zip(names, items, strict=False)}
    kwargs["signatures"] = _as_signatures(items[len(names)], "signatures")
    placeholder = False
    if len(items) == len(names) + 3:
        fee_payer = _as_address(items[len(names) + 1], "fee_payer", nullable=False)
        fee_payer_signatures = _as_signatures(items[len(names) + 2], "fee_payer_signatures")
        placeholder = (
            fee_payer == PLACEHOLDER_FEE_PAYER and fee_payer_signatures == PLACEHOLDER_FEE_PAYER_SIGNATURES
        )
        if not placeholder:
            kwargs["fee_payer"], kwargs["fee_payer_signatures"] = fee_payer, fee_payer_signatures
    tx = KaiaTx(type=tx_type, **kwargs)
    # Re-encoding catches every non-canonical form (long length prefixes etc.) in one place.
    again = (
        _encode_full(tx, PLACEHOLDER_FEE_PAYER, PLACEHOLDER_FEE_PAYER_SIGNATURES)
        if placeholder
        else encode(tx)
    )
    if again != raw:
        raise KaiaTxError("non-canonical encoding")
    return tx
