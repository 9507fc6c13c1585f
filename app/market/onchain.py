"""How orders and trades look to the EnergyMarket contract: ids, escrow nonces, leaves, batch proofs.

These reproduce the contract's own formulas (docs/market-contract.md); tests compare them with the
contract's view functions.
"""

from __future__ import annotations

from datetime import datetime

from eth_abi import encode
from web3 import Web3

ESCROW_NONCE_TAG = bytes(Web3.keccak(text="essx.market.escrow.v1"))
UINT32_MAX = 2**32 - 1


def id32(hex_id: str) -> bytes:
    """A platform id (uuid4 hex) as the contract's bytes32."""
    return bytes.fromhex(hex_id).rjust(32, b"\0")


def unix(dt: datetime) -> int:
    return int(dt.timestamp())


def escrow_nonce(order_id: str, slot_start: datetime, quantity_wh: int, limit_price: int) -> bytes:
    return bytes(
        Web3.keccak(
            encode(
                ["bytes32", "bytes32", "uint64", "uint32", "uint128"],
                [ESCROW_NONCE_TAG, id32(order_id), unix(slot_start), quantity_wh, limit_price],
            )
        )
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
) -> bytes:
    return bytes(
        Web3.keccak(
            encode(
                ["bytes32", "bytes32", "uint256", "address", "uint64", "uint32", "uint128", "bytes32"],
                [
                    id32(trade_id),
                    id32(buy_order_id),
                    trade_no,
                    seller,
                    unix(slot_start),
                    quantity_wh,
                    price,
                    orders_hash_,
                ],
            )
        )
    )


def _pair(a: bytes, b: bytes) -> bytes:
    return bytes(Web3.keccak(a + b if a <= b else b + a))


def merkle_proofs(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The contract's batch tree: pairs (2i, 2i+1) hashed in sorted order, an odd last node carried up."""
    if not leaves:
        raise ValueError("no leaves")
    proofs: list[list[bytes]] = [[] for _ in leaves]
    positions = list(range(len(leaves)))  # each leaf's index in the current level
    level = list(leaves)
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            nxt.append(_pair(level[i], level[i + 1]) if i + 1 < len(level) else level[i])
        for leaf_index, pos in enumerate(positions):
            sibling = pos ^ 1
            if sibling < len(level):
                proofs[leaf_index].append(level[sibling])
            positions[leaf_index] = pos // 2
        level = nxt
    return level[0], proofs
