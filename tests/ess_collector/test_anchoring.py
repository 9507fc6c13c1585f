"""Anchoring slots on the real MeterLedger (anvil) through the relayer; proofs checked by the contract."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from eth_abi import encode
from eth_utils import keccak
from hexbytes import HexBytes
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from app.context import Context
from app.core.security import utcnow
from app.sites.service import meter_ledger
from app.sites.worker import install_hooks, wallet_address
from app.wallets.models import Wallet
from common import merkle
from ess_collector.anchoring import anchor_due, proof_for, unix
from ess_collector.config import CollectorConfig
from ess_collector.models import LedgerSlot, ProductionReward, Site, SlotEnergy
from ess_collector.rewards import reward_due
from tests.ess_collector.harness import START, Harness, make_owner, site_row

CFG = CollectorConfig(slot_minutes=15, anchor_grace_s=60)
SLOT = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)
LATER = SLOT + timedelta(hours=1)  # long past the slot's end and grace delay
ENERGIES = ("pv_wh", "load_wh", "import_wh", "export_wh", "battery_charge_wh", "battery_discharge_wh")


# -- the tree, in pure Python -----------------------------------------------------------------------


def test_leaf_is_the_documented_double_keccak() -> None:
    values = [1200, 900, 300, 450, 200, 150]
    inner = keccak(encode(["uint64", "uint64", "uint256[6]"], [7, unix(SLOT), values]))
    assert merkle.leaf_hash(7, unix(SLOT), values) == keccak(inner)
    with pytest.raises(ValueError):
        merkle.leaf_hash(7, unix(SLOT), [1, 2, 3])


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 101])
def test_every_proof_leads_to_the_root_whatever_the_order(n: int) -> None:
    leaves = [merkle.leaf_hash(i, unix(SLOT), [i, 0, 0, 0, 0, 0]) for i in range(n)]
    shuffled = random.Random(n).sample(leaves, n)
    assert merkle.root(shuffled) == merkle.root(leaves)  # sorted leaves: the set decides, not the order
    for leaf in leaves:
        assert merkle.process_proof(leaf, merkle.proof(leaves, leaf)) == merkle.root(leaves)
    with pytest.raises(KeyError):
        merkle.proof(leaves, b"\x00" * 32)


# -- on chain ---------------------------------------------------------------------------------------


def add_slot_rows(ctx: Context, statuses: list[str], slot: datetime = SLOT) -> list[int]:
    owner = make_owner(ctx.engine, f"owner{slot.minute}@example.com")
    ids = []
    with Session(ctx.engine) as s:
        for i, status in enumerate(statuses):
            site = site_row(owner, "10.0.0.1", 1000 + i + slot.minute * 100, name=f"s{i}")
            s.add(site)
            s.flush()
            energies = dict(zip(ENERGIES, [800 + i, 600 + i, 100, 300 + i, 50, 50], strict=True))
            s.add(
                SlotEnergy(
                    site_id=site.id or 0,
                    slot_start=slot,
                    slot_minutes=15,
                    status=status,
                    good_polls=180,
                    expected_polls=180,
                    computed_at=utcnow(),
                    **energies,
                )
            )
            ids.append(site.id or 0)
        s.commit()
    return ids


def anchor(ctx: Context, **kw: object) -> list[LedgerSlot]:
    ledger = meter_ledger(ctx)
    assert ledger is not None
    install_hooks(ctx)
    rows = anchor_due(ctx.engine, ctx.relayer, ledger, CFG, LATER, **kw)  # type: ignore[arg-type]
    for r in rows:
        if r.tx_id is not None:
            assert ctx.relayer.wait(r.tx_id, timeout=20).status == "confirmed"
    return rows


def ledger_row(ctx: Context, slot: datetime = SLOT) -> LedgerSlot:
    with Session(ctx.engine) as s:
        row = s.exec(select(LedgerSlot).where(col(LedgerSlot.slot_start) == slot)).first()
        assert row is not None
        return row


def test_a_slot_is_anchored_once_with_root_count_totals_and_verifiable_proofs(ctx: Context) -> None:
    ids = add_slot_rows(ctx, ["complete", "complete", "recovered", "incomplete", "complete"])
    (written,) = anchor(ctx)
    row = ledger_row(ctx)
    assert written.id == row.id
    assert row.status == "confirmed" and row.tx_hash and row.block_number and row.count == 4
    ledger = meter_ledger(ctx)
    assert ledger is not None
    root, count, totals, block = ledger.functions.records(unix(SLOT)).call()
    assert "0x" + bytes(root).hex() == row.root and count == 4 and block == row.block_number
    assert list(totals) == [row.pv_wh, row.load_wh, row.import_wh, row.export_wh, 200, 200]
    assert row.pv_wh == sum(800 + i for i in (0, 1, 2, 4))  # the incomplete site is left out
    with Session(ctx.engine) as s:
        for site_id in ids:
            record = s.exec(select(SlotEnergy).where(col(SlotEnergy.site_id) == site_id)).one()
            if record.status == "incomplete":
                assert record.leaf is None
                continue
            p = proof_for(s, site_id, SLOT)
            assert ledger.functions.verify(unix(SLOT), p.leaf, p.path).call()
            forged = merkle.leaf_hash(site_id, unix(SLOT), [record.pv_wh + 1, *list(leaf_inputs(record))[1:]])  # type: ignore[operator]
            assert not ledger.functions.verify(unix(SLOT), forged, p.path).call()
    assert anchor(ctx) == []  # already anchored: nothing to do


def leaf_inputs(record: SlotEnergy) -> list[int]:
    return [int(getattr(record, f)) for f in ENERGIES]


def test_a_lost_database_write_is_reconciled_with_the_chain(ctx: Context) -> None:
    add_slot_rows(ctx, ["complete", "complete"])
    anchor(ctx)
    first = ledger_row(ctx)
    with Session(ctx.engine) as s:  # as if the commit after anchoring had been lost
        s.execute(delete(LedgerSlot))
        s.execute(update(SlotEnergy).values(leaf=None))
        s.commit()
    (again,) = anchor(ctx)
    assert again.tx_id is None and again.status == "confirmed"  # the chain refused; its record is ours
    assert ledger_row(ctx).root == first.root and ledger_row(ctx).block_number == first.block_number


def test_a_slot_without_complete_records_is_not_anchored(ctx: Context) -> None:
    add_slot_rows(ctx, ["incomplete", "incomplete"])
    (row,) = anchor(ctx)
    assert row.status == "empty" and row.tx_id is None and row.root is None
    ledger = meter_ledger(ctx)
    assert ledger is not None and not ledger.functions.isAnchored(unix(SLOT)).call()


def test_slots_inside_the_grace_delay_wait(ctx: Context) -> None:
    add_slot_rows(ctx, ["complete"])
    ledger = meter_ledger(ctx)
    assert ledger is not None
    early = SLOT + CFG.slot + timedelta(seconds=30)
    assert anchor_due(ctx.engine, ctx.relayer, ledger, CFG, early) == []


def test_served_proof_verifies_with_the_contract(ctx: Context, client) -> None:  # type: ignore[no-untyped-def]
    from tests.api.helpers import admin_headers

    ids = add_slot_rows(ctx, ["complete", "recovered", "complete"])
    anchor(ctx)
    headers = admin_headers(client, ctx)
    body = client.get(f"/api/v1/ledger/slots/{unix(SLOT)}", headers=headers).json()
    assert body["status"] == "confirmed" and body["count"] == 3 and body["tx_hash"] and body["block_number"]
    assert body["totals_wh"]["pv_wh"] == 800 + 801 + 802
    r = client.get(f"/api/v1/sites/{ids[1]}/slots/{SLOT.isoformat()}/proof", headers=headers)
    assert r.status_code == 200, r.text
    proof = r.json()
    ledger = meter_ledger(ctx)
    assert ledger is not None
    # A verifier computes the leaf itself from the served record, never trusting the served hash.
    leaf = merkle.leaf_hash(proof["site_id"], proof["slot_start_unix"], proof["energies_wh"])
    assert "0x" + leaf.hex() == proof["leaf"]
    path = [HexBytes(x) for x in proof["proof"]]
    assert ledger.functions.verify(proof["slot_start_unix"], leaf, path).call()
    missing = client.get(f"/api/v1/sites/{ids[1]}/slots/{unix(SLOT + CFG.slot)}/proof", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"] == "NotAnchoredYet"
    assert client.get("/api/v1/ledger/slots/12345", headers=headers).status_code == 400  # not aligned


def test_production_reward_is_minted_once_per_site_slot(ctx: Context) -> None:
    ids = add_slot_rows(ctx, ["complete", "complete"])
    per_kwh = 2 * 10**18  # 2 coins per kWh
    with Session(ctx.engine) as s:
        owner = s.get(Site, ids[0])
        assert owner is not None
        address = "0x" + "ab" * 20
        s.add(Wallet(user_id=owner.owner_id, kind="linked", address=address, created_at=utcnow()))
        s.commit()
    anchor(ctx, reward_per_kwh=per_kwh)
    assert reward_due(ctx.engine, ctx.relayer, ctx.coin, wallet_address) == 2
    assert reward_due(ctx.engine, ctx.relayer, ctx.coin, wallet_address) == 0  # exactly once
    with Session(ctx.engine) as s:
        rewards = s.exec(select(ProductionReward).order_by(col(ProductionReward.site_id))).all()
        for reward in rewards:
            assert reward.tx_id is not None
            assert ctx.relayer.wait(reward.tx_id, timeout=20).status == "confirmed"
    with Session(ctx.engine) as s:
        rewards = s.exec(select(ProductionReward).order_by(col(ProductionReward.site_id))).all()
        assert [(r.pv_wh, r.amount, r.status) for r in rewards] == [
            (800, 800 * per_kwh // 1000, "confirmed"),
            (801, 801 * per_kwh // 1000, "confirmed"),
        ]
    balance = ctx.coin.functions.balanceOf(ctx.w3.to_checksum_address(address)).call()
    assert balance == (800 + 801) * per_kwh // 1000


def test_no_reward_when_the_policy_is_off(ctx: Context) -> None:
    add_slot_rows(ctx, ["complete"])
    anchor(ctx)
    assert reward_due(ctx.engine, ctx.relayer, ctx.coin, wallet_address) == 0
    with Session(ctx.engine) as s:
        assert s.exec(select(ProductionReward)).first() is None


def test_end_to_end_from_simulated_sites_to_a_verified_proof(ctx: Context) -> None:
    """Real sites over TCP -> readings -> a complete slot -> anchored -> a proof the contract accepts."""
    h = Harness(ctx.engine, 3)
    try:
        h.poll_until(START + h.cfg.slot + timedelta(minutes=2))
        h.aggregate()
    finally:
        h.close()
    ledger = meter_ledger(ctx)
    assert ledger is not None
    install_hooks(ctx)
    rows = anchor_due(ctx.engine, ctx.relayer, ledger, h.cfg, START + timedelta(hours=1))
    anchored = [r for r in rows if r.slot_start == START]
    assert anchored and anchored[0].count == 3 and anchored[0].tx_id is not None
    assert ctx.relayer.wait(anchored[0].tx_id, timeout=20).status == "confirmed"
    with Session(ctx.engine) as s:
        for site_id in h.site_ids:
            p = proof_for(s, site_id, START)
            assert p.record.status == "complete" and (p.record.pv_wh or 0) > 0
            assert ledger.functions.verify(unix(START), p.leaf, p.path).call()
