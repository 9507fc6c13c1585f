"""Recording matched trades on chain in batches, each with the escrow locks its buy orders need.

One recording batch is in flight at a time, so each buy order's fill numbers (which the contract checks)
follow recording order. A failed batch puts its trades back to `matched` and its orders back to
`authorized`; nothing was recorded or locked. The escrow side of a batch is `app/market/escrow.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from eth_abi import decode as abi_decode
from hexbytes import HexBytes
from sqlmodel import Session, col, select
from web3 import Web3

from app.context import Context
from app.core.security import utcnow
from app.events.service import emit
from app.market import engine, escrow
from app.market.models import Trade, TradeStatus
from app.market.onchain import id32, merkle_proofs, trade_leaf, unix
from wallet.chain import ZERO_ADDRESS
from wallet.models import OutgoingTx
from wallet.purposes import Completions, Purpose, TxPurpose
from wallet.relayer import TxRejected, TxStatus

log = logging.getLogger(__name__)
MAX_BATCH = 200
BATCH_TOPIC = Web3.keccak(text="BatchRecorded(uint256,uint256,uint256,bytes32)").hex()


def submit_trades(ctx: Context) -> int:
    with engine.slot_lock(ctx), Session(ctx.engine, expire_on_commit=False) as session:
        in_flight = session.exec(
            select(Trade.id).where(col(Trade.status) == TradeStatus.recording).limit(1)
        ).first()
        if in_flight is not None:
            return 0
        trades = list(
            session.exec(
                select(Trade)
                .where(col(Trade.status) == TradeStatus.matched)
                .order_by(col(Trade.created_at), col(Trade.id))
                .limit(MAX_BATCH)
            )
        )
        if not trades:  # the idle pass: no chain read (locks_for_batch's chain_now), no fence, no commit
            return 0
        locking, locks, trades = escrow.locks_for_batch(ctx, session, trades)
        if not trades:
            ctx.commit_background(session)  # the skipped buyers' cancellations
            return 0
        locked_now = {o.id: o.wallet_address or "" for o in locking}
        fills: dict[str, int] = {}
        items = []
        for i, t in enumerate(trades):
            if t.buy_order_id not in fills:
                fills[t.buy_order_id] = int(
                    session.exec(
                        select(Trade.id).where(
                            col(Trade.buy_order_id) == t.buy_order_id, col(Trade.trade_no).is_not(None)
                        )
                    )
                    .all()
                    .__len__()
                )
            seller = engine.seller_address(session, t.seller_id)
            if seller is None:
                log.error("seller has no wallet", extra={"fields": {"trade": t.id}})
                return 0
            items.append(
                (
                    id32(t.id),
                    id32(t.buy_order_id),
                    fills[t.buy_order_id],
                    seller,
                    unix(t.slot_start),
                    t.quantity_wh,
                    t.price,
                    HexBytes(t.orders_hash),
                )
            )
            fills[t.buy_order_id] += 1
            # the leaf names the buyer of an order this batch locks; a stored escrow names its own (zero)
            buyer = locked_now.get(t.buy_order_id, ZERO_ADDRESS)
            t.proof = {"batch_index": i, "seller": seller, "buyer": buyer}
        closing = escrow.to_close_in_batch(session, trades, locking)
        market = ctx.contracts["EnergyMarket"]
        data = market.encodeABI(
            fn_name="lockRecordAndClose", args=[locks, items, [id32(o.id) for o in closing]]
        )
        try:
            tx = ctx.relayer.prepare(session, to=market.address, data=data, purpose=TxPurpose.trade_batch)
        except TxRejected as exc:
            session.rollback()
            log.error("trade batch rejected", extra={"fields": {"reason": exc.reason}})
            return 0
        escrow.mark_locking(session, locking, closing, tx)
        for t in trades:
            t.status, t.record_tx_id, t.updated_at = TradeStatus.recording, tx.id, utcnow()
            session.add(t)
        ctx.commit_background(session)
    ctx.relayer.kick()
    return len(trades)


def register_completions(completions: Completions, ctx: Context) -> None:
    completions.register(TxPurpose.trade_batch, make_hook(ctx))
    completions.register(TxPurpose.escrow_release, escrow.release_final)
    completions.register(TxPurpose.escrow_release_batch, escrow.release_final)


def make_hook(ctx: Context) -> Callable[[Session, OutgoingTx, Purpose], None]:
    def on_trades_final(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
        escrow.batch_final(session, tx)
        _trades_final(ctx, session, tx)

    return on_trades_final


def _trades_final(ctx: Context, session: Session, tx: OutgoingTx) -> None:
    trades = list(
        session.exec(
            select(Trade).where(col(Trade.record_tx_id) == tx.id, col(Trade.status) == TradeStatus.recording)
        )
    )
    if not trades:
        return
    trades.sort(key=lambda t: (t.proof or {}).get("batch_index", 0))
    if tx.status != TxStatus.confirmed:
        for t in trades:
            t.status, t.record_tx_id, t.proof = TradeStatus.matched, None, None
            session.add(t)
        return
    receipt = ctx.w3.eth.get_transaction_receipt(tx.tx_hash)  # type: ignore[arg-type]
    batch_no = first = None
    root = b""
    for lg in receipt["logs"]:
        if lg["topics"] and HexBytes(lg["topics"][0]).hex() == BATCH_TOPIC:
            batch_no = int(HexBytes(lg["topics"][1]).hex(), 16)
            first, _count, root = abi_decode(["uint256", "uint256", "bytes32"], HexBytes(lg["data"]))
    if batch_no is None or first is None:
        log.error("recorded batch without a BatchRecorded event", extra={"fields": {"tx": tx.tx_hash}})
        return
    leaves = [
        trade_leaf(
            t.id,
            t.buy_order_id,
            first + i,
            (t.proof or {})["seller"],
            t.slot_start,
            t.quantity_wh,
            t.price,
            HexBytes(t.orders_hash),
            (t.proof or {})["buyer"],
        )
        for i, t in enumerate(trades)
    ]
    computed, proofs = merkle_proofs(leaves)
    if computed != bytes(root):
        log.error("batch root differs from ours", extra={"fields": {"tx": tx.tx_hash}})
    for i, t in enumerate(trades):
        t.trade_no, t.batch_no, t.status, t.updated_at = first + i, batch_no, TradeStatus.recorded, utcnow()
        t.proof = {
            **(t.proof or {}),
            "proof": ["0x" + p.hex() for p in proofs[i]],
            "leaf": "0x" + leaves[i].hex(),
        }
        session.add(t)
        for user_id in (t.buyer_id, t.seller_id):
            emit(session, user_id, "trade.recorded", trade_id=t.id, tx_hash=tx.tx_hash, trade_no=t.trade_no)
