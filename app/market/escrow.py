"""A buy order's escrow, from the buyer's signature to the last coin going home: the one place that decides it.

    none --authorise--> authorized --first match, in the pass's batch--> locking --> locked --> releasing --> released
                           |                                                  (batch failed: back to authorized)
                           +--cancelled or expired without a trade--> unused     (nothing ever sent: no gas)

The buyer signs the ERC-3009 authorisation when placing the order and the order enters the book at once; the
signature is used on chain only when the order has matched, by `lockAndRecordTrades`, together with the pass's
trade records. An order that never matches costs no gas. A buyer whose balance no longer covers the
authorisation when its first trade is recorded is skipped: the order is cancelled with the reason, its trades
voided (deleted: they never reached the chain) and the sellers' quantities go back to the book. Releases
(cancellation, gate closure) are batched. A buy order that can match no more when its trades are recorded
(a call auction's orders expire at it; a filled order) is closed in the recording batch itself
(`lockRecordAndClose`): its release rides there, with no transaction of its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from app.coin.service import balance_now, chain_now
from app.context import Context
from app.core.money import format_amount
from app.core.security import utcnow
from app.events.service import emit, emit_rows
from app.market.models import EscrowStatus, Order, OrderSide, OrderStatus, Trade, TradeStatus, lock_changes
from app.market.onchain import id32, unix
from app.market.rules import MarketRules
from wallet.models import OutgoingTx
from wallet.purposes import Purpose, TxPurpose
from wallet.relayer import TxStatus
from wallet.typed_data import split_signature

UINT32_MAX = 2**32 - 1
EXPIRY_MARGIN_SECONDS = 30  # a batch is mined within seconds; closer than this to expiry it may not be
LockArgs = tuple[bytes, str, int, int, int, int, int, int, int, bytes, bytes]


def valid_before(rules_: MarketRules, slot_start: datetime, now: datetime, chain_now: int) -> int:
    """The authorisation stays good until the slot ends: the order matches until gate closure (the call
    auction at it) and its first trade is recorded shortly after. Counted from the chain's clock, which the
    coin checks (the platform's clock may run on energy time, as in the demo)."""
    return chain_now + max(
        int((slot_start + timedelta(minutes=rules_.slot_minutes) - now).total_seconds()), 0
    )


def authorised(signature: bytes, seq: int) -> dict[str, Any]:
    """The buyer signed: what the order's authorising compare-and-set writes. The signature is kept for the
    first match and the order enters the book (`seq`: its priority, also this change's number). Nothing
    goes on chain now; the wallet's balance stays reserved (`app/spending/holds.py`) while it is authorised."""
    return {
        "signature": "0x" + signature.hex(),
        "escrow_status": EscrowStatus.authorized,
        "status": OrderStatus.open,
        "updated_at": utcnow(),
        "seq": seq,
        "change_no": seq,
    }


def accepted(session: Session, order: Order) -> None:
    """Written with the authorisation (`authorised`): one INSERT, not the ORM's flush of a new object."""
    emit_rows(
        session,
        [
            {
                "user_id": order.user_id,
                "kind": "order.accepted",
                "at": utcnow(),
                "data": {"order_id": order.id, "side": OrderSide.buy},
            }
        ],
    )


def locks_for_batch(
    ctx: Context, session: Session, trades: list[Trade]
) -> tuple[list[Order], list[LockArgs], list[Trade]]:
    """The buy orders a recording batch locks (matched for the first time), their `Lock`s, and the trades that
    stay in the batch. Each first-time buyer's balance is read now; one that no longer covers its authorisation, or whose
    authorisation is about to expire, is skipped (a lock that would revert would hold up every batch)."""
    orders: list[Order] = []
    locks: list[LockArgs] = []
    kept: list[Trade] = []
    skipped: set[str] = set()
    decided: set[str] = set()
    committed: dict[str, int] = {}
    expires_before = chain_now(ctx) + EXPIRY_MARGIN_SECONDS
    for t in trades:
        if t.buy_order_id in skipped:
            continue
        if t.buy_order_id not in decided:
            decided.add(t.buy_order_id)
            order = session.get(Order, t.buy_order_id)
            assert order is not None
            if order.escrow_status == EscrowStatus.authorized:
                address = order.wallet_address or ""
                balance = balance_now(ctx, address) - committed.get(address, 0)
                reason = None
                if (order.valid_before or 0) <= expires_before:
                    reason = "the escrow authorisation expired before the order's first trade was recorded"
                elif balance < order.escrow_amount:
                    reason = (
                        f"escrow not covered when the order matched: it needs "
                        f"{format_amount(order.escrow_amount)} coins and the wallet holds "
                        f"{format_amount(max(balance, 0))}"
                    )
                if reason is not None:
                    skip_unusable(session, order, reason)
                    skipped.add(order.id)
                    continue
                committed[address] = committed.get(address, 0) + order.escrow_amount
                orders.append(order)
                locks.append(_lock_args(order))
        kept.append(t)
    return orders, locks, kept


def _lock_args(order: Order) -> LockArgs:
    v, r, s = split_signature(bytes.fromhex((order.signature or "").removeprefix("0x")))
    return (
        id32(order.id),
        order.wallet_address or "",
        order.escrow_amount,
        unix(order.slot_start),
        order.quantity_wh,
        order.limit_price,
        order.valid_after or 0,
        order.valid_before or 0,
        v,
        r,
        s,
    )


def skip_unusable(session: Session, order: Order, reason: str) -> None:
    """Cancel a buy order whose wallet cannot cover its escrow when it first matched (or whose authorisation
    has expired); void its trades and give the sellers their quantity back."""
    order.failure_reason = reason
    order.status, order.escrow_status, order.open_wh, order.updated_at = (
        OrderStatus.cancelled,
        EscrowStatus.unused,
        0,
        utcnow(),
    )
    session.add(order)
    emit(session, order.user_id, "order.cancelled", order_id=order.id, reason=order.failure_reason)
    for t in session.exec(select(Trade).where(col(Trade.buy_order_id) == order.id)):
        if t.status != TradeStatus.matched:
            continue
        order.filled_wh -= t.quantity_wh
        sell = session.get(Order, t.sell_order_id)
        assert sell is not None
        sell.open_wh += t.quantity_wh
        sell.filled_wh -= t.quantity_wh
        if sell.status == OrderStatus.filled:
            sell.status = OrderStatus.open  # past gate closure the next pass expires it
        sell.updated_at = utcnow()
        session.add(sell)
        for user_id in (t.buyer_id, t.seller_id):
            emit(session, user_id, "trade.voided", trade_id=t.id, reason=reason)
        session.delete(t)  # never on chain: the match is undone (the events keep what happened)


def to_close_in_batch(session: Session, trades: list[Trade], locking: list[Order]) -> list[Order]:
    """The buy orders of a recording batch that can match no more (filled, expired or cancelled) and whose
    every unrecorded trade is in this batch: the batch closes them (cancels the rest, releases what they do
    not owe to trades). Orders locked now or locked by an earlier batch; none with a release in flight."""
    in_batch: dict[str, int] = {}
    for t in trades:
        in_batch[t.buy_order_id] = in_batch.get(t.buy_order_id, 0) + 1
    first_time = {o.id for o in locking}
    out = []
    for order_id, count in in_batch.items():
        order = session.get(Order, order_id)
        assert order is not None
        if order.status not in (OrderStatus.filled, OrderStatus.expired, OrderStatus.cancelled):
            continue
        if order.id not in first_time and order.escrow_status != EscrowStatus.locked:
            continue
        if _unrecorded(session, order_id) == count:
            out.append(order)
    return out


def _unrecorded(session: Session, order_id: str) -> int:
    """How many of a buy order's trades are not recorded on chain yet (matched, or in a recording batch)."""
    return session.exec(
        select(func.count())
        .select_from(Trade)
        .where(
            col(Trade.buy_order_id) == order_id,
            col(Trade.status).in_((TradeStatus.matched, TradeStatus.recording)),
        )
    ).one()


def mark_locking(session: Session, orders: list[Order], closing: list[Order], tx: OutgoingTx) -> None:
    for order in orders:
        order.escrow_status, order.lock_tx_id, order.updated_at = EscrowStatus.locking, tx.id, utcnow()
        session.add(order)
    for order in closing:
        order.release_tx_id = tx.id
        # locked by an earlier batch: its release is in flight now
        if order.escrow_status == EscrowStatus.locked:
            order.escrow_status = EscrowStatus.releasing
        session.add(order)


def batch_final(session: Session, tx: OutgoingTx) -> None:
    """The batch that locked (and closed) these orders is final: locked, or released when the batch closed
    them; if it reverted, authorised again for the retry (and a closed order that was locked before: locked)."""
    confirmed = tx.status == TxStatus.confirmed
    for order in session.exec(
        select(Order).where(col(Order.lock_tx_id) == tx.id, col(Order.escrow_status) == EscrowStatus.locking)
    ):
        order.escrow_status = EscrowStatus.locked if confirmed else EscrowStatus.authorized
        order.updated_at = utcnow()
        session.add(order)
        if confirmed:
            emit(session, order.user_id, "order.escrow_locked", order_id=order.id, escrow_tx_hash=tx.tx_hash)
    _release_done(session, tx)


def close_unmatched(session: Session, order: Order) -> None:
    """A cancelled or expired buy order: an authorisation never used on chain is simply dropped (no gas)."""
    if order.escrow_status == EscrowStatus.authorized and order.filled_wh == 0:
        order.escrow_status = EscrowStatus.unused
        session.add(order)


def release_one(ctx: Context, session: Session, order: Order) -> None:
    """A locked order cancelled before gate closure: its unmatched part and price differences go back now."""
    market = ctx.contracts["EnergyMarket"]
    cancel = min(order.quantity_wh - _owed_to_trades(session, order), UINT32_MAX)
    data = market.encodeABI(fn_name="releaseEscrow", args=[id32(order.id), max(cancel, 0)])
    tx = ctx.relayer.prepare(
        session, to=market.address, data=data, purpose=Purpose.of(TxPurpose.escrow_release, order.id)
    )
    order.escrow_status, order.release_tx_id = EscrowStatus.releasing, tx.id
    session.add(order)


def _owed_to_trades(session: Session, order: Order) -> int:
    q = session.exec(
        select(func.coalesce(func.sum(Trade.quantity_wh), 0)).where(col(Trade.buy_order_id) == order.id)
    ).one()
    return int(q)


def release_closed(ctx: Context, session: Session, rules_: MarketRules, now: datetime) -> int:
    """One `releaseEscrows` for every locked order that is closed and whose trades are all recorded."""
    ready = _to_release(session, rules_, now)
    if not ready:
        return 0
    lock_changes(session)  # the order counter before the relayer's nonce counter, as a cancel does
    market = ctx.contracts["EnergyMarket"]
    data = market.encodeABI(fn_name="releaseEscrows", args=[[id32(o.id) for o in ready]])
    tx = ctx.relayer.prepare(session, to=market.address, data=data, purpose=TxPurpose.escrow_release_batch)
    for o in ready:
        o.escrow_status, o.release_tx_id = EscrowStatus.releasing, tx.id
        session.add(o)
    return len(ready)


def _to_release(session: Session, rules_: MarketRules, now: datetime) -> list[Order]:
    rows = session.exec(
        select(Order).where(
            col(Order.side) == OrderSide.buy,
            col(Order.escrow_status) == EscrowStatus.locked,
            col(Order.status).in_((OrderStatus.expired, OrderStatus.filled, OrderStatus.cancelled)),
        )
    ).all()
    out = []
    for o in rows:
        if rules_.gate_closure(o.slot_start) > now and o.status != OrderStatus.cancelled:
            continue
        if not _unrecorded(session, o.id):
            out.append(o)
    return out


def release_final(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
    """A release's transaction (`release_one`, `release_closed`) is final: the relayer's completion for
    both purpose kinds (registered by app/market/recording.py)."""
    _release_done(session, tx)


def _release_done(session: Session, tx: OutgoingTx) -> None:
    """The orders whose release rode in `tx` (a release of its own, or a recording batch that closed them):
    released, or if it reverted, no release in flight any more (an order locked before is locked again; one
    whose lock rode in the same reverted batch stays as `batch_final` left it, authorised)."""
    confirmed = tx.status == TxStatus.confirmed
    for order in session.exec(select(Order).where(col(Order.release_tx_id) == tx.id)):
        if confirmed:
            order.escrow_status = EscrowStatus.released
            emit(session, order.user_id, "order.escrow_released", order_id=order.id)
        else:
            order.release_tx_id = None
            if order.escrow_status == EscrowStatus.releasing:
                order.escrow_status = EscrowStatus.locked
        order.updated_at = utcnow()
        session.add(order)
