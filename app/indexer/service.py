"""Follows the chain and stores the coin's Transfer events once each, resuming from a checkpoint.

The table can always be rebuilt from the chain (`essx reindex`): the chain is the source of truth.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import Table, bindparam, delete, or_, update
from sqlmodel import Session, col, select
from web3 import Web3

from app.context import Context
from app.core.money import format_amount
from app.core.security import utcnow
from app.indexer.models import IndexerCheckpoint, TransferEvent
from app.indexer.schemas import TransferPage, TransferPublic
from common.sql import insert_ignore
from common.worker import Pacing, Worker
from wallet.chain import raw_call

log = logging.getLogger(__name__)
TRANSFER_TOPIC = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")
CHECKPOINT = "EnergyCoin.Transfer"


def _topic_address(topic: str) -> str:
    return Web3.to_checksum_address("0x" + topic[-40:])


def start_block(ctx: Context) -> int:
    return max(0, ctx.deployment.blocks.get("EnergyCoin", 0) - 1)


_CHECKPOINTS: Table = IndexerCheckpoint.__table__  # type: ignore[attr-defined]
# Core statements built once, run once a block for ever (the ORM's get, flush and identity map cost more)
_READ_CHECKPOINT = select(_CHECKPOINTS.c.block_number).where(_CHECKPOINTS.c.name == bindparam("name"))
# Two indexers may run at once (several workers): the checkpoint only moves forward.
_MOVE_CHECKPOINT = (
    update(_CHECKPOINTS)
    .where(_CHECKPOINTS.c.name == bindparam("cp_name"), _CHECKPOINTS.c.block_number < bindparam("to"))
    .values(block_number=bindparam("to"), updated_at=bindparam("at"))
)


def _stored_checkpoint(session: Session) -> int | None:
    return session.execute(_READ_CHECKPOINT, {"name": CHECKPOINT}).scalar()


def checkpoint(session: Session, ctx: Context) -> int:
    stored = _stored_checkpoint(session)
    return stored if stored is not None else start_block(ctx)


def sync_once(ctx: Context, max_blocks: int | None = None) -> int:
    """Indexes from the checkpoint to the chain head (one batch of blocks at most); returns new events."""
    batch = max_blocks or ctx.settings.indexer_batch_blocks
    # raw: web3's middlewares and formatters cost more than the call, once a second for ever
    head = int(raw_call(ctx.w3, "eth_blockNumber", []), 16) - (ctx.settings.confirmations - 1)
    with Session(ctx.engine) as session:
        stored = _stored_checkpoint(session)
        done = stored if stored is not None else start_block(ctx)
        if head <= done:
            return 0
        to_block = min(head, done + batch)
        # Raw JSON-RPC: web3's result formatters cost more than the database insert at catch-up speed.
        logs = raw_call(
            ctx.w3,
            "eth_getLogs",
            [
                {
                    "address": ctx.coin.address,
                    "topics": [TRANSFER_TOPIC],
                    "fromBlock": hex(done + 1),
                    "toBlock": hex(to_block),
                }
            ],
        )
        times = _block_times(ctx, sorted({int(lg["blockNumber"], 16) for lg in logs}))
        rows = [
            {
                "block_number": int(lg["blockNumber"], 16),
                "block_hash": lg["blockHash"],
                "tx_hash": lg["transactionHash"],
                "log_index": int(lg["logIndex"], 16),
                "from_address": _topic_address(lg["topics"][1]),
                "to_address": _topic_address(lg["topics"][2]),
                "value": str(int(lg["data"], 16)),
                "block_time": times.get(int(lg["blockNumber"], 16)),
            }
            for lg in logs
        ]
        new = insert_ignore(session, TransferEvent.__table__, rows)  # type: ignore[attr-defined]
        now = utcnow()
        if stored is None:  # the first pass ever: created, unless another indexer did it just now
            first = {"name": CHECKPOINT, "block_number": to_block, "updated_at": now}
            insert_ignore(session, _CHECKPOINTS, [first])
        session.execute(_MOVE_CHECKPOINT, {"cp_name": CHECKPOINT, "to": to_block, "at": now})
        session.commit()
        return new


def _block_times(ctx: Context, numbers: list[int]) -> dict[int, datetime]:
    provider = ctx.w3.provider
    if not numbers:
        return {}
    batch = getattr(provider, "batch", None)
    if batch is not None:
        results = batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        return {
            n: datetime.fromtimestamp(int(r["timestamp"], 16), UTC)
            for n, r in zip(numbers, results, strict=True)
        }
    return {n: datetime.fromtimestamp(int(ctx.w3.eth.get_block(n)["timestamp"]), UTC) for n in numbers}


def catch_up(ctx: Context) -> int:
    total = 0
    while True:
        with Session(ctx.engine) as session:
            done = checkpoint(session, ctx)
        total += sync_once(ctx)
        with Session(ctx.engine) as session:
            if checkpoint(session, ctx) == done:
                return total


def reindex(ctx: Context) -> int:
    """Drops the indexed events and rebuilds them from the chain."""
    with Session(ctx.engine) as session:
        session.exec(delete(TransferEvent))  # type: ignore[call-overload]
        session.exec(delete(IndexerCheckpoint).where(col(IndexerCheckpoint.name) == CHECKPOINT))  # type: ignore[call-overload]
        session.commit()
    return catch_up(ctx)


def transfers_of(session: Session, address: str, limit: int, before_block: int | None) -> TransferPage:
    q = (
        select(TransferEvent)
        .where(or_(col(TransferEvent.from_address) == address, col(TransferEvent.to_address) == address))
        .order_by(col(TransferEvent.block_number).desc(), col(TransferEvent.log_index).desc())
        .limit(limit)
    )
    if before_block is not None:
        q = q.where(col(TransferEvent.block_number) < before_block)
    items = []
    for e in session.exec(q):
        direction = (
            "self" if e.from_address == e.to_address else ("out" if e.from_address == address else "in")
        )
        items.append(
            TransferPublic(
                tx_hash=e.tx_hash,
                log_index=e.log_index,
                block_number=e.block_number,
                block_time=e.block_time,
                from_address=e.from_address,
                to_address=e.to_address,
                value=format_amount(e.value),
                direction=direction,
            )
        )
    return TransferPage(address=address, items=items, indexed_to_block=_stored_checkpoint(session))


class IndexerWorker(Worker):
    """Keeps the index close to the chain head: passes back to back while it catches up."""

    def __init__(self, ctx: Context) -> None:
        every = ctx.settings.indexer_interval_seconds
        super().__init__(
            "indexer", [self.sync], Pacing(every, backoff_first=every, backoff_max=max(every, 15.0))
        )
        self.ctx = ctx

    def sync(self) -> int:
        return sync_once(self.ctx)
