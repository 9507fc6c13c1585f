"""MeterLedger: one anchor per slot, reporter-only, constant gas, sorted-pair Merkle proofs."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError

from common.merkle import hash_pair, process_proof, proofs_in_order
from tests.contracts.chain import REVERT_GAS, assert_reverts, deploy, events, selector, send

pytestmark = pytest.mark.usefixtures("chain_snapshot")

SLOT = 1_800_000_000  # a 15-minute-aligned unix time
TOTALS = [1_200, 900, 300, 450, 200, 150]  # Wh: pv, load, import, export, battery charge, discharge
ROOT = keccak(b"root")


# --- common.merkle's sorted-pair tree (OpenZeppelin MerkleProof convention), leaves by position ------


def merkle_root(leaves: list[bytes]) -> bytes:
    return proofs_in_order(leaves)[0]


def merkle_proof(leaves: list[bytes], index: int) -> list[bytes]:
    return proofs_in_order(leaves)[1][index]


def reading_leaf(site: int, slot: int, values: list[int]) -> bytes:
    """A double-hashed leaf, so no leaf can be mistaken for an inner node (64-byte preimage)."""
    return keccak(keccak(encode(["uint64", "uint64", "uint256[6]"], [site, slot, values])))


def readings(n: int) -> list[bytes]:
    return [reading_leaf(site, SLOT, [site * 10 + k for k in range(6)]) for site in range(1, n + 1)]


def test_python_tree_matches_the_definition() -> None:
    a, b, c = readings(3)
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == hash_pair(a, b) == hash_pair(b, a)
    assert merkle_root([a, b, c]) == hash_pair(hash_pair(a, b), c)
    for n in (1, 2, 3, 10):
        leaves = readings(n)
        for i, leaf in enumerate(leaves):
            assert process_proof(leaf, merkle_proof(leaves, i)) == merkle_root(leaves)


# --- the contract --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger(w3: Web3, module_chain: None, admin: LocalAccount) -> Contract:
    return deploy(w3, "MeterLedger", admin, admin.address)


def anchor(w3: Web3, ledger: Contract, reporter: LocalAccount, slot: int, root: bytes, count: int) -> int:
    receipt = send(w3, ledger.functions.anchor(slot, root, count, TOTALS), reporter)
    return int(receipt["gasUsed"])


def test_anchor_stores_the_record_and_emits(w3: Web3, ledger: Contract, admin: LocalAccount) -> None:
    assert not ledger.functions.isAnchored(SLOT).call()
    receipt = send(w3, ledger.functions.anchor(SLOT, ROOT, 42, TOTALS), admin)
    (event,) = events(ledger, "SlotAnchored", receipt)
    assert event["args"]["slotStart"] == SLOT
    assert event["args"]["root"] == ROOT
    assert event["args"]["count"] == 42
    assert list(event["args"]["totals"]) == TOTALS

    root, count, totals, block_number = ledger.functions.records(SLOT).call()
    assert (root, count, list(totals), block_number) == (ROOT, 42, TOTALS, receipt["blockNumber"])
    assert ledger.functions.isAnchored(SLOT).call()
    assert not ledger.functions.isAnchored(SLOT + 900).call()
    assert ledger.functions.records(SLOT + 900).call() == [b"\x00" * 32, 0, [0] * 6, 0]


def test_anchor_gas_is_constant_and_below_100k(w3: Web3, ledger: Contract, admin: LocalAccount) -> None:
    gas = [
        anchor(w3, ledger, admin, SLOT + i * 900, keccak(i.to_bytes(4, "big")), count)
        for i, count in enumerate((1, 96, 65_535, 4_000_000_000))
    ]
    assert max(gas) < 100_000
    # Only calldata bytes differ (zero vs non-zero): within a few hundred gas of each other.
    assert max(gas) - min(gas) < 500, gas


def test_second_anchor_of_a_slot_reverts(w3: Web3, ledger: Contract, admin: LocalAccount) -> None:
    anchor(w3, ledger, admin, SLOT, ROOT, 3)
    again = ledger.functions.anchor(SLOT, keccak(b"other"), 4, TOTALS)
    expected = "0x" + (selector("AlreadyAnchored(uint64)") + encode(["uint64"], [SLOT])).hex()
    with pytest.raises(ContractCustomError, match=expected):
        again.call({"from": admin.address})
    tx = again.build_transaction(
        {
            "from": admin.address,
            "gas": REVERT_GAS,
            "nonce": w3.eth.get_transaction_count(admin.address),
        }
    )
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(admin.sign_transaction(tx).rawTransaction)
    )
    assert receipt["status"] == 0
    assert ledger.functions.records(SLOT).call()[:2] == [ROOT, 3]


@pytest.mark.parametrize(
    ("root", "count", "totals", "error"),
    [
        (b"\x00" * 32, 1, TOTALS, "EmptyAnchor(uint64)"),
        (ROOT, 0, TOTALS, "EmptyAnchor(uint64)"),
        (ROOT, 1, [*TOTALS[:5], 2**32], "TotalOutOfRange(uint256,uint256)"),
    ],
)
def test_invalid_anchor_reverts(
    ledger: Contract, admin: LocalAccount, root: bytes, count: int, totals: list[int], error: str
) -> None:
    with pytest.raises(ContractCustomError, match="0x" + selector(error).hex()):
        ledger.functions.anchor(SLOT, root, count, totals).call({"from": admin.address})


def test_only_reporters_anchor(
    w3: Web3, ledger: Contract, admin: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    reporter_role = ledger.functions.REPORTER_ROLE().call()
    assert reporter_role == keccak(text="REPORTER_ROLE")
    missing = f"AccessControl: account {alice.address.lower()} is missing role 0x{reporter_role.hex()}"
    assert_reverts(w3, ledger.functions.anchor(SLOT, ROOT, 1, TOTALS), alice, missing)

    missing_admin = f"AccessControl: account {bob.address.lower()} is missing role 0x{'00' * 32}"
    assert_reverts(w3, ledger.functions.grantRole(reporter_role, alice.address), bob, missing_admin)

    send(w3, ledger.functions.grantRole(reporter_role, alice.address), admin)
    anchor(w3, ledger, alice, SLOT, ROOT, 1)
    send(w3, ledger.functions.revokeRole(reporter_role, alice.address), admin)
    assert_reverts(w3, ledger.functions.anchor(SLOT + 900, ROOT, 1, TOTALS), alice, missing)


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_verify_proofs_built_in_python(w3: Web3, ledger: Contract, admin: LocalAccount, n: int) -> None:
    leaves = readings(n)
    anchor(w3, ledger, admin, SLOT, merkle_root(leaves), n)
    for i, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, i)
        assert ledger.functions.verify(SLOT, leaf, proof).call()
        # The same proof for another slot, or a tampered leaf, does not verify.
        assert not ledger.functions.verify(SLOT + 900, leaf, proof).call()
        tampered = reading_leaf(i + 1, SLOT, [(i + 1) * 10 + k + (k == 0) for k in range(6)])
        assert not ledger.functions.verify(SLOT, tampered, proof).call()
    if n > 1:
        assert not ledger.functions.verify(SLOT, leaves[0], merkle_proof(leaves, 1)).call()
        assert not ledger.functions.verify(SLOT, leaves[0], []).call()


def test_verify_on_an_unanchored_slot_is_false(ledger: Contract) -> None:
    leaf = readings(1)[0]
    assert not ledger.functions.verify(SLOT, leaf, []).call()
    assert not ledger.functions.verify(SLOT, b"\x00" * 32, []).call()
