"""Kaia fee-delegated transactions behind a small typed interface.

All 14 fee-delegated types (full and partial) are decoded, encoded byte-exact, hashed and signed for any
chain id. web3py-ext is not used at run time: it hashes the chain id as two fixed bytes (wrong outside
256..65535) and lacks the partial types; tests cross-check it where it is right. See KAIA.md.

Typical relay flow::

    tx = check_policy(sender_raw, targets, selectors, max_gas, chain_id, max_gas_price=cap)
    signed = sign_as_fee_payer(sender_raw, fee_payer_key, chain_id)
    send_raw_kaia(w3, signed.raw)  # returns signed.tx_hash_hex
"""

from wallet.kaia.codec import (
    decode,
    encode,
    encode_sender_signed,
    fee_payer_signing_hash,
    fee_payer_signing_payload,
    sender_signing_hash,
    sender_signing_payload,
    sender_tx_hash,
    tx_hash,
)
from wallet.kaia.model import FIELDS, FeeDelegatedTx, InvalidSignature, KaiaTx, KaiaTxError, Signature, TxType
from wallet.kaia.policy import DEFAULT_ALLOWED_TYPES, FeeDelegationRejected, RejectReason, check_policy
from wallet.kaia.rpc import KaiaRpcError, send_raw_kaia
from wallet.kaia.signing import (
    Signer,
    recover_fee_payers,
    recover_senders,
    recover_signer,
    sign_as_fee_payer,
    sign_as_sender,
)

__all__ = [
    "DEFAULT_ALLOWED_TYPES",
    "FIELDS",
    "FeeDelegatedTx",
    "FeeDelegationRejected",
    "InvalidSignature",
    "KaiaRpcError",
    "KaiaTx",
    "KaiaTxError",
    "RejectReason",
    "Signature",
    "Signer",
    "TxType",
    "check_policy",
    "decode",
    "encode",
    "encode_sender_signed",
    "fee_payer_signing_hash",
    "fee_payer_signing_payload",
    "recover_fee_payers",
    "recover_senders",
    "recover_signer",
    "send_raw_kaia",
    "sender_signing_hash",
    "sender_signing_payload",
    "sender_tx_hash",
    "sign_as_fee_payer",
    "sign_as_sender",
    "tx_hash",
]
