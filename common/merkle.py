"""The leaf encoding of a site-slot record and the Merkle tree anchored in MeterLedger.

Leaf (docs/collector.md, "Leaf encoding"):

    leaf = keccak256(keccak256(abi.encode(uint64 siteId, uint64 slotStart, uint256[6] energies)))

with energies in Wh in the contract's totals order: pv, load, grid import, grid export, battery charge,
battery discharge, and slotStart in unix seconds. The double hash makes a leaf's preimage 32 bytes, never
64, so no leaf can be passed off as an inner node (whose preimage is two concatenated 32-byte hashes).

Tree: OpenZeppelin's sorted-pair convention (``MerkleProof.processProof``): parent = keccak256 of the
two children in ascending byte order. Leaves are sorted ascending by their bytes before building, so the
root depends only on the set of records, not on any database order; an odd node at the end of a layer
is carried up unchanged. One leaf is its own root (empty proof).
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import encode
from eth_utils import keccak

LEAF_TYPES = ["uint64", "uint64", "uint256[6]"]


def leaf_hash(site_id: int, slot_start: int, energies: Sequence[int]) -> bytes:
    if len(energies) != 6 or any(e < 0 for e in energies):
        raise ValueError("a leaf needs six non-negative energies in Wh")
    return keccak(keccak(encode(LEAF_TYPES, [site_id, slot_start, list(energies)])))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a <= b else keccak(b + a)


def layers(leaves: Sequence[bytes], *, sort: bool = True) -> list[list[bytes]]:
    """Bottom-up layers of the tree over the sorted leaves (or in the given order: the market's trade
    batches keep recording order, since trade numbers follow it)."""
    if not leaves:
        raise ValueError("a tree needs at least one leaf")
    out = [sorted(leaves) if sort else list(leaves)]
    while len(out[-1]) > 1:
        level = out[-1]
        out.append(
            [
                hash_pair(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                for i in range(0, len(level), 2)
            ]
        )
    return out


def root(leaves: Sequence[bytes]) -> bytes:
    return layers(leaves)[-1][0]


def proof(leaves: Sequence[bytes], leaf: bytes) -> list[bytes]:
    """Sibling hashes from ``leaf`` up to the root."""
    tree = layers(leaves)
    try:
        index = tree[0].index(leaf)
    except ValueError:
        raise KeyError("leaf is not in the tree") from None
    return proof_from_layers(tree, index)


def proofs_in_order(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of the unsorted tree over `leaves` and every leaf's proof, by position (leaves may repeat)."""
    tree = layers(leaves, sort=False)
    return tree[-1][0], [proof_from_layers(tree, index) for index in range(len(leaves))]


def proof_from_layers(tree: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The proof of the ``index``-th leaf of ``tree`` (as :func:`layers` builds it): its sibling on each
    layer below the root, bottom-up; an odd last node has none on its layer."""
    path = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def process_proof(leaf: bytes, path: Sequence[bytes]) -> bytes:
    node = leaf
    for sibling in path:
        node = hash_pair(node, sibling)
    return node
