"""The typed model of Kaia fee-delegated transactions: type table, signatures, transaction, errors.

Layouts follow kaiachain/kaia `blockchain/types/tx_internal_data_fee_delegated_*.go`; the field order of
every type is listed once in `FIELDS` and the codec, hashes and signing all read it from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from eth_utils import is_hex_address, to_checksum_address

UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class KaiaTxError(ValueError):
    """A transaction that cannot be decoded, encoded or signed as asked."""


class InvalidSignature(KaiaTxError):
    """A signature that is malformed, does not match the chain id, or cannot be recovered."""


class TxType(IntEnum):
    FEE_DELEGATED_VALUE_TRANSFER = 0x09
    FEE_DELEGATED_VALUE_TRANSFER_WITH_RATIO = 0x0A
    FEE_DELEGATED_VALUE_TRANSFER_MEMO = 0x11
    FEE_DELEGATED_VALUE_TRANSFER_MEMO_WITH_RATIO = 0x12
    FEE_DELEGATED_ACCOUNT_UPDATE = 0x21
    FEE_DELEGATED_ACCOUNT_UPDATE_WITH_RATIO = 0x22
    FEE_DELEGATED_SMART_CONTRACT_DEPLOY = 0x29
    FEE_DELEGATED_SMART_CONTRACT_DEPLOY_WITH_RATIO = 0x2A
    FEE_DELEGATED_SMART_CONTRACT_EXECUTION = 0x31
    FEE_DELEGATED_SMART_CONTRACT_EXECUTION_WITH_RATIO = 0x32
    FEE_DELEGATED_CANCEL = 0x39
    FEE_DELEGATED_CANCEL_WITH_RATIO = 0x3A
    FEE_DELEGATED_CHAIN_DATA_ANCHORING = 0x49
    FEE_DELEGATED_CHAIN_DATA_ANCHORING_WITH_RATIO = 0x4A


_T = TxType
_VALUE = ("nonce", "gas_price", "gas", "to", "value", "sender")
_DEPLOY = (*_VALUE, "input", "human_readable")
# Typed fields in wire order (KaiaTx attribute names), excluding the type byte and all signature parts.
FIELDS: dict[TxType, tuple[str, ...]] = {
    _T.FEE_DELEGATED_VALUE_TRANSFER: _VALUE,
    _T.FEE_DELEGATED_VALUE_TRANSFER_WITH_RATIO: (*_VALUE, "fee_ratio"),
    _T.FEE_DELEGATED_VALUE_TRANSFER_MEMO: (*_VALUE, "input"),
    _T.FEE_DELEGATED_VALUE_TRANSFER_MEMO_WITH_RATIO: (*_VALUE, "input", "fee_ratio"),
    _T.FEE_DELEGATED_ACCOUNT_UPDATE: ("nonce", "gas_price", "gas", "sender", "key"),
    _T.FEE_DELEGATED_ACCOUNT_UPDATE_WITH_RATIO: ("nonce", "gas_price", "gas", "sender", "key", "fee_ratio"),
    _T.FEE_DELEGATED_SMART_CONTRACT_DEPLOY: (*_DEPLOY, "code_format"),
    # Not a typo: with ratio, feeRatio sits between humanReadable and codeFormat.
    _T.FEE_DELEGATED_SMART_CONTRACT_DEPLOY_WITH_RATIO: (*_DEPLOY, "fee_ratio", "code_format"),
    _T.FEE_DELEGATED_SMART_CONTRACT_EXECUTION: (*_VALUE, "input"),
    _T.FEE_DELEGATED_SMART_CONTRACT_EXECUTION_WITH_RATIO: (*_VALUE, "input", "fee_ratio"),
    _T.FEE_DELEGATED_CANCEL: ("nonce", "gas_price", "gas", "sender"),
    _T.FEE_DELEGATED_CANCEL_WITH_RATIO: ("nonce", "gas_price", "gas", "sender", "fee_ratio"),
    _T.FEE_DELEGATED_CHAIN_DATA_ANCHORING: ("nonce", "gas_price", "gas", "sender", "input"),
    _T.FEE_DELEGATED_CHAIN_DATA_ANCHORING_WITH_RATIO: (
        "nonce",
        "gas_price",
        "gas",
        "sender",
        "input",
        "fee_ratio",
    ),
}
# Only deploys may omit the recipient (Go: `*common.Address`); the others use a plain 20-byte address.
NULLABLE_TO = frozenset(
    {_T.FEE_DELEGATED_SMART_CONTRACT_DEPLOY, _T.FEE_DELEGATED_SMART_CONTRACT_DEPLOY_WITH_RATIO}
)

INT_BOUNDS = {
    "nonce": UINT64_MAX,
    "gas": UINT64_MAX,
    "gas_price": UINT256_MAX,
    "value": UINT256_MAX,
    "fee_ratio": 255,
    "code_format": 255,
}
ADDRESS_FIELDS = ("to", "sender")
BYTES_FIELDS = ("input", "key")
_DEFAULTS: dict[str, object] = {
    "to": None,
    "value": 0,
    "input": b"",
    "key": b"",
    "human_readable": False,
    "code_format": 0,
    "fee_ratio": None,
}


@dataclass(frozen=True)
class Signature:
    """One `[v, r, s]` entry; `v = recId + 35 + 2 * chainId`."""

    v: int
    r: int
    s: int

    def __post_init__(self) -> None:
        if not (0 <= self.v <= UINT256_MAX and 0 <= self.r <= UINT256_MAX and 0 <= self.s <= UINT256_MAX):
            raise InvalidSignature(f"signature values out of range: {self}")

    def chain_id(self) -> int:
        if self.v < 35:
            raise InvalidSignature(f"v={self.v} carries no chain id")
        return (self.v - 35) // 2


def checksum_address(name: str, value: str) -> str:
    if not isinstance(value, str) or not is_hex_address(value):
        raise KaiaTxError(f"{name} is not a 20-byte hex address: {value!r}")
    return to_checksum_address(value)


@dataclass(frozen=True)
class KaiaTx:
    """A Kaia fee-delegated transaction, sender-signed or fully signed.

    Fields a type does not carry must keep their defaults, so nothing set here is silently dropped by
    the encoder. Addresses are normalised to checksum form.
    """

    type: TxType
    nonce: int
    gas_price: int
    gas: int
    sender: str
    to: str | None = None
    value: int = 0
    input: bytes = b""
    key: bytes = b""  # the RLP-encoded AccountKey of an account update, kept opaque
    human_readable: bool = False
    code_format: int = 0
    fee_ratio: int | None = None
    signatures: tuple[Signature, ...] = ()
    fee_payer: str | None = None
    fee_payer_signatures: tuple[Signature, ...] = ()

    def __post_init__(self) -> None:
        try:
            tx_type = TxType(self.type)
        except ValueError:
            raise KaiaTxError(f"not a fee-delegated Kaia type: {self.type!r}") from None
        object.__setattr__(self, "type", tx_type)
        fields = FIELDS[tx_type]
        for name, default in _DEFAULTS.items():
            if name not in fields and getattr(self, name) != default:
                raise KaiaTxError(f"{tx_type.name} has no field {name}")
        for name, bound in INT_BOUNDS.items():
            value = getattr(self, name)
            if name in fields and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= bound
            ):
                raise KaiaTxError(f"{name} must be an integer in 0..{bound}: {value!r}")
        if "fee_ratio" in fields and not 1 <= (self.fee_ratio or 0) <= 99:
            raise KaiaTxError(f"fee_ratio must be 1..99: {self.fee_ratio!r}")
        for name in BYTES_FIELDS:
            if not isinstance(getattr(self, name), bytes):
                raise KaiaTxError(f"{name} must be bytes")
        if not isinstance(self.human_readable, bool):
            raise KaiaTxError("human_readable must be a bool")
        object.__setattr__(self, "sender", checksum_address("sender", self.sender))
        if self.to is not None:
            object.__setattr__(self, "to", checksum_address("to", self.to))
        elif "to" in fields and tx_type not in NULLABLE_TO:
            raise KaiaTxError(f"{tx_type.name} needs a recipient")
        if self.fee_payer is not None:
            object.__setattr__(self, "fee_payer", checksum_address("fee_payer", self.fee_payer))
        elif self.fee_payer_signatures:
            raise KaiaTxError("fee payer signatures without a fee payer")
        object.__setattr__(self, "signatures", tuple(self.signatures))
        object.__setattr__(self, "fee_payer_signatures", tuple(self.fee_payer_signatures))

    @property
    def selector(self) -> bytes | None:
        """The 4-byte function selector of a contract call, None if the input is shorter."""
        return self.input[:4] if len(self.input) >= 4 else None


@dataclass(frozen=True)
class FeeDelegatedTx:
    """The result of fee-payer signing: what to submit and the hashes to track it by."""

    tx: KaiaTx
    raw: bytes
    sender_tx_hash: bytes  # keccak of the sender-signed encoding (stable across fee payers)
    tx_hash: bytes  # keccak of `raw`: what the node returns and receipts are found by

    @property
    def raw_hex(self) -> str:
        return "0x" + self.raw.hex()

    @property
    def tx_hash_hex(self) -> str:
        return "0x" + self.tx_hash.hex()

    @property
    def sender_tx_hash_hex(self) -> str:
        return "0x" + self.sender_tx_hash.hex()
