"""Settling recorded trades against anchored meter data, or by an admin decision.

A slot settles automatically once it is over, its meter data is anchored (the MeterLedger root) and every
site involved has a complete (or recovered) slot energy. Otherwise it waits for an admin decision, or for
the buyer's on-chain refund after the timeout. Each settlement transaction names the trades it settles, batch
by batch (`settleBatches`: the trades as calldata, each recorded batch's root checked once); the contract skips
trades already settled, so a batch retried after a crash pays nobody twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hexbytes import HexBytes
from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from app.context import Context
from app.core.errors import AppError, Conflict, NotFound
from app.core.security import utcnow
from app.events.service import emit
from app.market import engine
from app.market.models import Order, SettleRule, Trade, TradeStatus
from app.market.onchain import id32, unix
from app.settlement.delivery import TradeTerms, delivered_wh, settlement_amounts
from app.settlement.errors import SlotNotOver
from common import clock
from ess_collector.models import MEASURED, LedgerSlot, LedgerStatus, SlotEnergy
from wallet.chain import ZERO_ADDRESS
from wallet.models import OutgoingTx
from wallet.purposes import Completions, Purpose, TxPurpose
from wallet.relayer import TxRejected, TxStatus

log = logging.getLogger(__name__)
MAX_BATCH = 200


def _slot_end(ctx: Context, slot_start: datetime) -> datetime:
    return slot_start + timedelta(minutes=ctx.settings.slot_minutes)


def _terms(session: Session, trades: list[Trade]) -> list[TradeTerms]:
    out = []
    for t in trades:
        sell = session.get(Order, t.sell_order_id)
        buy = session.get(Order, t.buy_order_id)
        out.append(
            TradeTerms(t.id, t.quantity_wh, sell.site_id if sell else None, buy.site_id if buy else None)
        )
    return out


def _site_energies(
    session: Session, slot_start: datetime, trades: list[Trade]
) -> tuple[list[TradeTerms], set[int], dict[int, SlotEnergy]]:
    """The trades' terms, the sites they involve, and those sites' slot energy rows (where recorded)."""
    terms = _terms(session, trades)
    sites = {s for t in terms for s in (t.seller_site, t.buyer_site) if s is not None}
    energies = {
        e.site_id: e
        for e in session.exec(
            select(SlotEnergy).where(
                col(SlotEnergy.slot_start) == slot_start, col(SlotEnergy.site_id).in_(sites)
            )
        )
    }
    return terms, sites, energies


def _delivered(terms: list[TradeTerms], energies: dict[int, SlotEnergy]) -> dict[str, int]:
    exported = {s: int(e.export_wh or 0) for s, e in energies.items()}
    imported = {s: int(e.import_wh or 0) for s, e in energies.items()}
    return delivered_wh(terms, exported, imported)


def measure(session: Session, slot_start: datetime, trades: list[Trade]) -> dict[str, int] | None:
    """Delivered Wh per trade, or None while any involved site's slot energy is missing or incomplete."""
    terms, sites, energies = _site_energies(session, slot_start, trades)
    if any(s not in energies or energies[s].status not in MEASURED for s in sites):
        return None
    return _delivered(terms, energies)


def settle_ready_slots(ctx: Context) -> int:
    """Submits one settlement batch per ready slot (at most one batch in flight per slot)."""
    submitted = 0
    ended_by = clock.now() - timedelta(minutes=ctx.settings.slot_minutes)  # slots that started by then
    if not _any_to_settle(ctx, ended_by):  # the market loop's pass every second, nearly always
        return 0
    with engine.slot_lock(ctx), Session(ctx.engine, expire_on_commit=False) as session:
        slots = session.exec(
            select(Trade.slot_start)
            .where(col(Trade.status) == TradeStatus.recorded, col(Trade.slot_start) <= ended_by)
            .distinct()
        ).all()
        for slot_start in slots:
            ledger = session.exec(select(LedgerSlot).where(col(LedgerSlot.slot_start) == slot_start)).first()
            if ledger is None or ledger.status != LedgerStatus.confirmed or not ledger.root:
                continue  # not anchored (yet, or never: incomplete data waits for an admin)
            if session.exec(
                select(Trade.id).where(
                    col(Trade.slot_start) == slot_start, col(Trade.status) == TradeStatus.settling
                )
            ).first():
                continue
            trades = _recorded(session, slot_start)
            delivered = measure(session, slot_start, trades)
            if delivered is None:
                continue
            submitted += _submit(
                ctx,
                session,
                slot_start,
                trades,
                delivered,
                SettleRule.measured,
                ledger_root=ledger.root,
                background=True,
            )
    return submitted


_TRADES = Trade.__table__  # type: ignore[attr-defined]
# Settlement's idle pass: one indexed lookup on a pooled connection, no ORM session, no market lock. The
# session's query of every slot with recorded trades (future slots' too) cost about 0.5 ms a second.
_ANY_RECORDED_ENDED = (
    sa_select(_TRADES.c.id)
    .where(_TRADES.c.status == TradeStatus.recorded, _TRADES.c.slot_start <= bindparam("ended_by"))
    .limit(1)
)


def _any_to_settle(ctx: Context, ended_by: datetime) -> bool:
    """Whether a recorded trade's slot has ended (started by ``ended_by``): only then can one be ready."""
    with ctx.engine.connect() as conn:
        return conn.execute(_ANY_RECORDED_ENDED, {"ended_by": ended_by}).first() is not None


def _recorded(session: Session, slot_start: datetime) -> list[Trade]:
    return list(
        session.exec(
            select(Trade)
            .where(col(Trade.slot_start) == slot_start, col(Trade.status) == TradeStatus.recorded)
            .order_by(col(Trade.trade_no))
            .limit(MAX_BATCH)
        )
    )


def _submit(
    ctx: Context,
    session: Session,
    slot_start: datetime,
    trades: list[Trade],
    delivered: dict[str, int],
    rule: SettleRule,
    *,
    ledger_root: str | None = None,
    decision_hash: bytes | None = None,
    background: bool = False,
) -> int:
    """``background``: called by the market loop, whose commits are fenced by the background lease."""
    market = ctx.contracts["EnergyMarket"]
    items = _batch_settlements(session, slot_start, trades, delivered)
    if ledger_root is not None:
        data = market.encodeABI(
            fn_name="settleBatches", args=[unix(slot_start), HexBytes(ledger_root), items]
        )
    else:
        data = market.encodeABI(
            fn_name="settleBatchesByDecision", args=[unix(slot_start), decision_hash, items]
        )
    try:
        tx = ctx.relayer.prepare(session, to=market.address, data=data, purpose=TxPurpose.settle_batch)
    except TxRejected as exc:
        session.rollback()
        log.error(
            "settlement rejected", extra={"fields": {"slot": slot_start.isoformat(), "reason": exc.reason}}
        )
        raise Conflict(f"the chain refuses this settlement: {exc.reason}") from None
    for t in trades:
        t.status, t.settle_tx_id, t.settle_rule, t.updated_at = TradeStatus.settling, tx.id, rule, utcnow()
        t.delivered_wh = delivered[t.id]
        session.add(t)
    if background:
        ctx.commit_background(session)
    else:
        session.commit()
    ctx.relayer.kick()
    return len(trades)


def _batch_settlements(
    session: Session, slot_start: datetime, trades: list[Trade], delivered: dict[str, int]
) -> list[tuple[Any, ...]]:
    """`settleBatches`' input: per recorded batch, every leaf of the batch (zero for the trades settled now,
    which go as calldata) so the contract checks the batch root once instead of a proof per trade."""
    by_batch: dict[int, list[Trade]] = {}
    for t in trades:
        by_batch.setdefault(t.batch_no or 0, []).append(t)
    items = []
    for batch_no, settling in sorted(by_batch.items()):
        members = list(
            session.exec(select(Trade).where(col(Trade.batch_no) == batch_no).order_by(col(Trade.trade_no)))
        )
        first = members[0].trade_no or 0
        now = {t.id for t in settling}
        leaves = [b"\0" * 32 if m.id in now else HexBytes((m.proof or {})["leaf"]) for m in members]
        rows = []
        for t in sorted(settling, key=lambda t: t.trade_no or 0):
            proof = t.proof or {}
            rows.append(
                (
                    (t.trade_no or 0) - first,
                    id32(t.id),
                    id32(t.buy_order_id),
                    proof["seller"],
                    t.quantity_wh,
                    t.price,
                    HexBytes(t.orders_hash),
                    proof.get("buyer", ZERO_ADDRESS),  # the leaf's: zero when the escrow is stored
                    delivered[t.id],
                )
            )
        items.append((batch_no, first, leaves, rows))
    return items


def decide(ctx: Context, session: Session, slot_start: datetime, rule: str, reason: str) -> tuple[int, str]:
    """An admin settles a slot whose meter data is incomplete: as contracted, or as measured so far."""
    if slot_start.tzinfo is None:
        raise AppError("slot_start needs a time zone")
    if _slot_end(ctx, slot_start) > clock.now():
        raise SlotNotOver(f"the slot {slot_start.isoformat()} is not over yet")
    trades = _recorded(session, slot_start)
    if not trades:
        if session.exec(select(Trade.id).where(col(Trade.slot_start) == slot_start)).first() is None:
            raise NotFound(f"no trades in the slot {slot_start.isoformat()}")
        raise Conflict("every trade of this slot is already settled, settling, or not yet recorded")
    if rule == SettleRule.contracted:
        delivered = {t.id: t.quantity_wh for t in trades}
    else:
        delivered = _partial_measure(session, slot_start, trades)
    decision = {
        "slot_start": slot_start.isoformat(),
        "rule": rule,
        "reason": reason,
        "trades": sorted(delivered.items()),
    }
    digest = hashlib.sha256(json.dumps(decision, sort_keys=True).encode()).digest()
    count = _submit(
        ctx, session, slot_start, trades, delivered, SettleRule(f"{rule}_by_admin"), decision_hash=digest
    )
    return count, "0x" + digest.hex()


def _partial_measure(session: Session, slot_start: datetime, trades: list[Trade]) -> dict[str, int]:
    terms, _, energies = _site_energies(session, slot_start, trades)
    return _delivered(terms, energies)


def register_completions(completions: Completions, ctx: Context) -> None:
    completions.register(TxPurpose.settle_batch, make_hook(ctx))
    completions.register(TxPurpose.withdraw_batch, withdrawn)


def withdrawn(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
    """The payouts left the contract (or stay credited there, to be withdrawn by their owners)."""


def make_hook(ctx: Context) -> Callable[[Session, OutgoingTx, Purpose], None]:
    def on_settle_final(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
        trades = list(
            session.exec(
                select(Trade).where(
                    col(Trade.settle_tx_id) == tx.id, col(Trade.status) == TradeStatus.settling
                )
            )
        )
        if tx.status != TxStatus.confirmed:
            for t in trades:
                t.status, t.settle_tx_id, t.delivered_wh, t.settle_rule = (
                    TradeStatus.recorded,
                    None,
                    None,
                    None,
                )
                session.add(t)
            return
        bps = ctx.settings.settlement_penalty_bps
        payees: set[str] = set()
        for t in trades:
            to_seller, to_buyer, penalty = settlement_amounts(
                t.quantity_wh, t.price, t.delivered_wh or 0, bps
            )
            t.paid, t.refunded, t.penalty = to_seller, to_buyer, penalty
            t.measured_wh = t.delivered_wh if t.settle_rule == SettleRule.measured else t.measured_wh
            t.status, t.updated_at = TradeStatus.settled, utcnow()
            session.add(t)
            if to_seller:
                payees.add((t.proof or {}).get("seller", ""))
            buy = session.get(Order, t.buy_order_id)
            if to_buyer and buy is not None and buy.wallet_address:  # a buyer is credited only a shortfall
                payees.add(buy.wallet_address)
            for user_id in (t.buyer_id, t.seller_id):
                emit(
                    session,
                    user_id,
                    "trade.settled",
                    trade_id=t.id,
                    delivered_wh=t.delivered_wh,
                    tx_hash=tx.tx_hash,
                )
        # The contract credits balances; push them out to the wallets, gas-free for everyone (only accounts
        # this settlement credited: a zero balance in the list still costs a cold read).
        market = ctx.contracts["EnergyMarket"]
        accounts = sorted(a for a in payees if a)
        if accounts:
            data = market.encodeABI(fn_name="withdrawForBatch", args=[accounts])
            try:
                ctx.relayer.prepare(session, to=market.address, data=data, purpose=TxPurpose.withdraw_batch)
            except TxRejected as exc:
                log.error("withdrawal batch rejected", extra={"fields": {"reason": exc.reason}})

    return on_settle_final
