"""How orders and trades look to the EnergyMarket contract: ids, escrow nonces, leaves, batch proofs.

These reproduce the contract's own formulas (docs/market-contract.md); tests compare them with the
contract's view functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eth_abi import encode
from eth_utils import keccak
from web3 import Web3

from common.abi_words import uint_word
from common.merkle import proofs_in_order

ESCROW_NONCE_TAG = bytes(Web3.keccak(text="essx.market.escrow.v1"))
UINT32_MAX = 2**32 - 1


def id32(hex_id: str) -> bytes:
    """A platform id (uuid4 hex) as the contract's bytes32."""
    return bytes.fromhex(hex_id).rjust(32, b"\0")


def unix(dt: datetime) -> int:
    return int(dt.timestamp())


def escrow_nonce(order_id: str, slot_start: datetime, quantity_wh: int, limit_price: int) -> bytes:
    """keccak256(abi.encode(tag, id, uint64 slot, uint32 quantity, uint128 price)): every field is static,
    so the encoding is their words side by side (eth_abi's general encoder took 4x the CPU, on every buy)."""
    return keccak(
        ESCROW_NONCE_TAG
        + id32(order_id)
        + uint_word(unix(slot_start), 64)
        + uint_word(quantity_wh, 32)
        + uint_word(limit_price, 128)
    )


def order_hash(
    order_id: str, user_id: int, side: str, slot_start: datetime, quantity_wh: int, limit_price: int
) -> bytes:
    """A commitment to one order's terms; a trade carries the hash of both."""
    return bytes(
        Web3.keccak(
            encode(
                ["bytes32", "uint256", "string", "uint64", "uint32", "uint128"],
                [id32(order_id), user_id, side, unix(slot_start), quantity_wh, limit_price],
            )
        )
    )


def orders_hash(buy_hash: bytes, sell_hash: bytes) -> bytes:
    return bytes(Web3.keccak(buy_hash + sell_hash))


def trade_leaf(
    trade_id: str,
    buy_order_id: str,
    trade_no: int,
    seller: str,
    slot_start: datetime,
    quantity_wh: int,
    price: int,
    orders_hash_: bytes,
    buyer: str,
) -> bytes:
    """The contract's `tradeLeaf`: the recorded trade's words (fill replaced by the trade number) and the buy
    order's buyer."""
    words = (id32(trade_id), id32(buy_order_id), trade_no, seller, unix(slot_start), quantity_wh, price)
    return trade_leaf_of((*words, orders_hash_, buyer))


TRADE_LEAF_TYPES = (
    "bytes32",
    "bytes32",
    "uint256",
    "address",
    "uint64",
    "uint32",
    "uint128",
    "bytes32",
    "address",
)


def trade_leaf_of(words: Sequence[Any]) -> bytes:
    """`tradeLeaf` of the words as the contract hashes them (trade id, buy order id, trade number, seller,
    slot start, Wh, price, orders hash, buyer)."""
    return bytes(Web3.keccak(encode(list(TRADE_LEAF_TYPES), list(words))))


def merkle_proofs(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The contract's batch tree: sorted pairs, an odd last node carried up, leaves in recording order."""
    return proofs_in_order(leaves)
