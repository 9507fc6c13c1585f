"""Anchoring final slots on MeterLedger through the relayer, and proofs for anchored records.

A slot is anchored once ``anchor_delay`` has passed since its end. Its record (root, count, totals) is
built from the site-slot rows whose status is ``complete`` or ``recovered`` and written in the same
database transaction that prepares the relayer transaction and freezes those rows (their ``leaf`` is
set): a crash either keeps all of it or none. ``ledger_slots.slot_start`` is unique and the contract
reverts a second anchor of a slot, so a slot is anchored at most once even if two processes raced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from hexbytes import HexBytes
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from web3.contract import Contract

from common import clock, merkle
from common.lease import Lease
from ess_collector.config import CollectorConfig
from ess_collector.models import MEASURED, LedgerSlot, LedgerStatus, SlotEnergy
from ess_collector.validation import ENERGY
from wallet.models import OutgoingTx
from wallet.purposes import Purpose, TxPurpose
from wallet.relayer import Relayer, TxRejected, TxStatus

log = logging.getLogger(__name__)
PURPOSE = TxPurpose.meter_anchor
UINT32_MAX = 2**32 - 1
MAX_SLOTS_PER_RUN = 8


class NotAnchored(LookupError):
    pass


def _now() -> datetime:
    return clock.now()


def hex0x(b: bytes) -> str:
    return "0x" + bytes(b).hex()


def unix(t: datetime) -> int:
    return int(t.timestamp())


def energies_of(row: SlotEnergy) -> tuple[int, ...]:
    return tuple(int(getattr(row, f) or 0) for f in ENERGY)


def leaf_of(row: SlotEnergy) -> bytes:
    return merkle.leaf_hash(row.site_id, unix(row.slot_start), energies_of(row))


def due_slots(session: Session, cfg: CollectorConfig, now: datetime) -> list[datetime]:
    """Slots with site rows, past the anchor delay, that have no ledger record yet (oldest first)."""
    latest = cfg.slot_start(now - cfg.anchor_delay) - cfg.slot
    done = select(LedgerSlot.slot_start)
    rows = session.exec(
        select(SlotEnergy.slot_start)
        .where(col(SlotEnergy.slot_start) <= latest, col(SlotEnergy.slot_start).not_in(done))
        .distinct()
        .order_by(col(SlotEnergy.slot_start))
        .limit(MAX_SLOTS_PER_RUN)
    ).all()
    return list(rows)


def anchor_due(
    engine: Engine,
    relayer: Relayer,
    ledger: Contract,
    cfg: CollectorConfig,
    now: datetime | None = None,
    *,
    lease: Lease | None = None,
    reward_per_kwh: int | None = None,
) -> list[LedgerSlot]:
    """Anchor every due slot (and retry failed ones); returns the ledger rows written."""
    now = now or _now()
    written: list[LedgerSlot] = []
    with Session(engine, expire_on_commit=False) as session:
        slots = due_slots(session, cfg, now)
        retry = session.exec(select(LedgerSlot).where(col(LedgerSlot.status) == LedgerStatus.failed)).all()
    for slot in slots:
        with Session(engine, expire_on_commit=False) as session:
            if lease is not None:
                lease.fence(session)
            written.append(_anchor_slot(session, relayer, ledger, cfg, slot, reward_per_kwh))
            session.commit()
        relayer.kick()
    for row in retry:
        with Session(engine, expire_on_commit=False) as session:
            if lease is not None:
                lease.fence(session)
            fresh = session.get(LedgerSlot, row.id)
            if fresh is not None and fresh.status == LedgerStatus.failed:
                _submit(session, relayer, ledger, fresh)
                session.commit()
                written.append(fresh)
        relayer.kick()
    return written


def _anchor_slot(
    session: Session,
    relayer: Relayer,
    ledger: Contract,
    cfg: CollectorConfig,
    slot: datetime,
    reward_per_kwh: int | None,
) -> LedgerSlot:
    rows = session.exec(
        select(SlotEnergy).where(col(SlotEnergy.slot_start) == slot, col(SlotEnergy.status).in_(MEASURED))
    ).all()
    totals = [sum(energies_of(r)[i] for r in rows) for i in range(len(ENERGY))]
    now = _now()
    record = LedgerSlot(
        slot_start=slot,
        slot_minutes=cfg.slot_minutes,
        count=len(rows),
        pv_wh=totals[0],
        load_wh=totals[1],
        import_wh=totals[2],
        export_wh=totals[3],
        battery_charge_wh=totals[4],
        battery_discharge_wh=totals[5],
        contract=ledger.address,
        status=LedgerStatus.empty,
        reward_per_kwh=reward_per_kwh or None,
        created_at=now,
        updated_at=now,
    )
    session.add(record)
    if not rows:
        return record  # nothing complete: the contract refuses empty anchors, and nothing needs proving
    leaves = {r.id: leaf_of(r) for r in rows}
    record.root = hex0x(merkle.root(list(leaves.values())))
    for r in rows:
        r.leaf = hex0x(leaves[r.id])
        session.add(r)
    if any(t > UINT32_MAX for t in totals) or len(rows) > UINT32_MAX:
        record.status, record.error = LedgerStatus.conflict, "a total does not fit uint32 Wh: cannot anchor"
        return record
    _submit(session, relayer, ledger, record)
    return record


def _submit(session: Session, relayer: Relayer, ledger: Contract, record: LedgerSlot) -> None:
    slot = unix(record.slot_start)
    totals = [getattr(record, f) for f in ENERGY]
    data = ledger.encodeABI(fn_name="anchor", args=[slot, HexBytes(record.root or ""), record.count, totals])
    record.updated_at = _now()
    try:
        tx = relayer.prepare(session, to=ledger.address, data=data, purpose=Purpose.of(PURPOSE, slot))
    except TxRejected as exc:
        _reconcile(ledger, record, exc.reason)
        session.add(record)
        return
    record.status, record.tx_id, record.error = LedgerStatus.submitted, tx.id, None
    session.add(record)


def _reconcile(ledger: Contract, record: LedgerSlot, reason: str) -> None:
    """The chain refused the anchor: if it already holds exactly our record (a lost database write or a
    second process), that is success; anything else is a conflict for a human to look at."""
    root, count, totals, block = ledger.functions.records(unix(record.slot_start)).call()
    ours = [getattr(record, f) for f in ENERGY]
    if block and hex0x(root) == record.root and count == record.count and list(totals) == ours:
        record.status, record.block_number, record.error = LedgerStatus.confirmed, int(block), None
    elif block:
        record.status, record.error = (
            LedgerStatus.conflict,
            f"the chain holds another record for this slot ({reason})",
        )
    else:
        record.status, record.error = LedgerStatus.failed, reason[:500]
        log.warning("anchor rejected", extra={"fields": {"slot": unix(record.slot_start), "reason": reason}})


def on_anchor_final(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
    """Completion of ``meter_anchor`` (also after a restart): finish the ledger row of a final anchor."""
    record = session.exec(select(LedgerSlot).where(col(LedgerSlot.tx_id) == tx.id)).first()
    if record is None or record.status != LedgerStatus.submitted:
        return
    if tx.status == TxStatus.confirmed:
        record.status, record.tx_hash, record.block_number = (
            LedgerStatus.confirmed,
            tx.tx_hash,
            tx.block_number,
        )
    else:
        record.status, record.error = LedgerStatus.failed, tx.error
    record.updated_at = _now()
    session.add(record)


@dataclass(frozen=True)
class Proof:
    record: SlotEnergy
    ledger: LedgerSlot
    leaf: bytes
    path: list[bytes]


def proof_for(session: Session, site_id: int, slot_start: datetime) -> Proof:
    record = session.exec(
        select(SlotEnergy).where(col(SlotEnergy.site_id) == site_id, col(SlotEnergy.slot_start) == slot_start)
    ).first()
    ledger = session.exec(select(LedgerSlot).where(col(LedgerSlot.slot_start) == slot_start)).first()
    if record is None or record.leaf is None or ledger is None or ledger.root is None:
        raise NotAnchored("this site-slot record is not part of an anchored slot")
    leaves = session.exec(
        select(SlotEnergy.leaf).where(
            col(SlotEnergy.slot_start) == slot_start, col(SlotEnergy.leaf).is_not(None)
        )
    ).all()
    all_leaves: Sequence[bytes] = [bytes(HexBytes(x)) for x in leaves if x]
    leaf = leaf_of(record)  # recomputed from the record: a stored hash is never trusted on its own
    if hex0x(leaf) != record.leaf:
        raise NotAnchored("the record no longer matches its anchored leaf")
    return Proof(record, ledger, leaf, merkle.proof(all_leaves, leaf))
