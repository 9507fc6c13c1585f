"""What our fee payer agrees to pay for: the checks the relay runs before it signs anything."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from wallet.kaia.codec import decode
from wallet.kaia.model import KaiaTx, KaiaTxError, TxType
from wallet.kaia.signing import recover_senders

# Our product only sponsors contract calls (a KIP-7 transfer is 0x31, see KAIA.md).
DEFAULT_ALLOWED_TYPES = frozenset({TxType.FEE_DELEGATED_SMART_CONTRACT_EXECUTION})


class RejectReason(StrEnum):
    MALFORMED = "malformed"
    WRONG_TYPE = "wrong_type"
    ALREADY_HAS_FEE_PAYER = "already_has_fee_payer"
    CHAIN_ID_MISMATCH = "chain_id_mismatch"
    BAD_SENDER_SIGNATURE = "bad_sender_signature"
    TARGET_NOT_ALLOWED = "target_not_allowed"
    SELECTOR_NOT_ALLOWED = "selector_not_allowed"
    NONZERO_VALUE = "nonzero_value"
    GAS_ABOVE_CAP = "gas_above_cap"
    GAS_PRICE_ABOVE_CAP = "gas_price_above_cap"


class FeeDelegationRejected(Exception):
    """The relay refuses to pay for this transaction; `reason` is stable, `detail` is for humans."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def _normalise_selectors(selectors: Iterable[bytes]) -> frozenset[bytes]:
    out = frozenset(bytes(s) for s in selectors)
    if any(len(s) != 4 for s in out):
        raise ValueError("function selectors must be 4 bytes")
    return out


def check_policy(
    tx: KaiaTx | bytes,
    allowed_targets: Iterable[str],
    allowed_selectors: Iterable[bytes],
    max_gas: int,
    chain_id: int,
    *,
    max_gas_price: int | None = None,
    allowed_types: frozenset[TxType] = DEFAULT_ALLOWED_TYPES,
) -> KaiaTx:
    """Raise FeeDelegationRejected unless `tx` (decoded, or sender-signed raw bytes) is one we pay for.

    The sender must be a legacy-key account: exactly one signature that recovers to tx.sender.
    Set max_gas_price: fee-delegated types pay exactly their gasPrice, all of it from the fee payer, so
    without a cap a sender can make us pay any price. Returns the decoded transaction for convenience.
    """
    if isinstance(tx, bytes | bytearray):
        try:
            tx = decode(bytes(tx))
        except KaiaTxError as exc:
            raise FeeDelegationRejected(RejectReason.MALFORMED, str(exc)) from None
    if tx.type not in allowed_types:
        raise FeeDelegationRejected(RejectReason.WRONG_TYPE, tx.type.name)
    if tx.fee_payer is not None or tx.fee_payer_signatures:
        raise FeeDelegationRejected(RejectReason.ALREADY_HAS_FEE_PAYER, str(tx.fee_payer))
    if len(tx.signatures) != 1:
        raise FeeDelegationRejected(RejectReason.BAD_SENDER_SIGNATURE, f"{len(tx.signatures)} signatures")
    signed_chain_id = tx.signatures[0].chain_id() if tx.signatures[0].v >= 35 else None
    if signed_chain_id != chain_id:
        raise FeeDelegationRejected(RejectReason.CHAIN_ID_MISMATCH, f"signed for {signed_chain_id}")
    try:
        (signer,) = recover_senders(tx, chain_id)
    except KaiaTxError as exc:
        raise FeeDelegationRejected(RejectReason.BAD_SENDER_SIGNATURE, str(exc)) from None
    if signer != tx.sender:
        raise FeeDelegationRejected(RejectReason.BAD_SENDER_SIGNATURE, f"signed by {signer}, not {tx.sender}")
    targets = {t.lower() for t in allowed_targets}
    if tx.to is None or tx.to.lower() not in targets:
        raise FeeDelegationRejected(RejectReason.TARGET_NOT_ALLOWED, str(tx.to))
    if tx.selector is None or tx.selector not in _normalise_selectors(allowed_selectors):
        raise FeeDelegationRejected(RejectReason.SELECTOR_NOT_ALLOWED, "0x" + tx.input[:4].hex())
    if tx.value != 0:
        raise FeeDelegationRejected(RejectReason.NONZERO_VALUE, str(tx.value))
    if tx.gas > max_gas:
        raise FeeDelegationRejected(RejectReason.GAS_ABOVE_CAP, f"{tx.gas} > {max_gas}")
    if max_gas_price is not None and tx.gas_price > max_gas_price:
        raise FeeDelegationRejected(RejectReason.GAS_PRICE_ABOVE_CAP, f"{tx.gas_price} > {max_gas_price}")
    return tx
