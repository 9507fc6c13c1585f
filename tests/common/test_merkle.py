"""Proofs from built layers (common/merkle.py) against an independent reference: leaf ``i``'s sibling on
layer ``d`` is node ``(i >> d) ^ 1`` where that node exists."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from common import merkle


def reference_proof(tree: list[list[bytes]], index: int) -> list[bytes]:
    siblings = ((level, (index >> depth) ^ 1) for depth, level in enumerate(tree[:-1]))
    return [level[sibling] for level, sibling in siblings if sibling < len(level)]


@pytest.mark.parametrize("n", range(1, 10))
def test_every_leafs_proof_leads_to_the_root(n: int) -> None:
    leaves = [keccak(n.to_bytes(2, "big") + i.to_bytes(2, "big")) for i in range(n)]
    for sort in (True, False):
        tree = merkle.layers(leaves, sort=sort)
        for index, leaf in enumerate(tree[0]):
            path = merkle.proof_from_layers(tree, index)
            assert path == reference_proof(tree, index)
            assert merkle.process_proof(leaf, path) == tree[-1][0]
    sorted_tree = merkle.layers(leaves)
    for index, leaf in enumerate(sorted(leaves)):
        assert merkle.proof(leaves, leaf) == merkle.proof_from_layers(sorted_tree, index)


def test_proofs_in_order_keep_positions_and_repeated_leaves() -> None:
    a, b, c = (keccak(text=t) for t in "abc")
    leaves = [c, a, c, b, a]
    root, paths = merkle.proofs_in_order(leaves)
    assert root == merkle.layers(leaves, sort=False)[-1][0]
    assert all(merkle.process_proof(leaf, p) == root for leaf, p in zip(leaves, paths, strict=True))
    assert paths[0] != paths[2]  # the same leaf at two positions has two proofs
