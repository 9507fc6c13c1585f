"""Relaying authorised transfers: many ERC-3009 authorizations per AuthorizationRelay transaction.

The batch, its signed transaction and every transfer's `submitted` step are one database transaction;
the relayer then broadcasts and watches it. When the batch is final, each transfer is confirmed or failed
from the receipt's events (the token's AuthorizationUsed, the relay's RelayFailed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from eth_abi import decode as abi_decode
from hexbytes import HexBytes
from sqlalchemy import Table, update
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select
from web3 import Web3

from app.coin.service import chain_now
from app.context import Context
from app.core.crash import crash_point
from app.core.security import utcnow
from app.transfers.models import StepKind, Transfer, TransferStatus
from app.transfers.steps import StepLog, fail
from common.abi_words import address_word, bytes32_word, uint_word
from common.worker import Pacing, Worker
from wallet.models import OutgoingTx, TxAttempt
from wallet.purposes import Completions, Purpose, TxPurpose
from wallet.relayer import TxRejected, TxStatus
from wallet.typed_data import split_signature

log = logging.getLogger(__name__)
PURPOSE = TxPurpose.transfer_batch
MAX_BATCH = 150  # ~70k gas an item at worst: well inside a 30M block
# AuthorizationRelay.relay(Authorization[] items), encoded with eth_abi directly (`relay_calldata`).
RELAY_ITEM = "(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
RELAY_SELECTOR = Web3.keccak(text=f"relay({RELAY_ITEM}[])")[:4]
USED_TOPIC = Web3.keccak(text="AuthorizationUsed(address,bytes32)").hex()
FAILED_TOPIC = Web3.keccak(text="RelayFailed(address,bytes32,bytes)").hex()
TRANSFERS: Table = Transfer.__table__  # type: ignore[attr-defined]
# The relay needs no transfer's typed data, the largest column (JSON): not loaded.
WITHOUT_TYPED_DATA = defer(Transfer.typed_data)  # type: ignore[arg-type]


def _lock(ctx: Context) -> threading.Lock:
    return ctx.transfer_batch_lock


# The batcher's idle poll: one indexed lookup on a pooled connection, no ORM session. An idle pass of the
# full query (session, ORM select, row locks) cost about 1 ms of CPU five times a second.
ANY_AUTHORIZED = select(TRANSFERS.c.id).where(TRANSFERS.c.status == TransferStatus.authorized).limit(1)


def has_authorized(ctx: Context) -> bool:
    """Whether any transfer waits to be relayed (read outside the batch lock: a cheap early out)."""
    with ctx.engine.connect() as conn:
        return conn.execute(ANY_AUTHORIZED).first() is not None


def submit_batch(ctx: Context) -> int:
    """Puts every authorised transfer (up to MAX_BATCH) into one relay transaction; returns how many."""

    with _lock(ctx), Session(ctx.engine, expire_on_commit=False) as session:
        q = (
            select(Transfer)
            .options(WITHOUT_TYPED_DATA)
            .where(col(Transfer.status) == TransferStatus.authorized)
            .order_by(col(Transfer.updated_at))
            .limit(MAX_BATCH)
        )
        if session.get_bind().dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)  # another process may be batching too
        rows = list(session.exec(q))
        if not rows:
            return 0
        now = chain_now(ctx)
        steps = StepLog(session, rows)
        batch = []
        for t in rows:
            if now >= t.valid_before - 2:
                fail(session, t, "authorization expired before it could be relayed", steps)
            else:
                batch.append(t)
        if not batch:
            steps.write()
            ctx.commit_background(session)
            return 0
        relay = ctx.contracts["AuthorizationRelay"]
        items = []
        for t in batch:
            v, r, s = split_signature(t.signature or "")
            items.append(
                (
                    t.from_address,
                    t.to_address,
                    t.amount,
                    t.valid_after,
                    t.valid_before,
                    HexBytes(t.nonce),
                    v,
                    r,
                    s,
                )
            )
        data = relay_calldata(items)
        try:
            # No estimate: the relay isolates every item, so it never reverts; 100k gas an item covers an
            # authorization to a new holder with room to spare (unused gas is not charged).
            gas = 60_000 + 100_000 * len(items)
            tx = ctx.relayer.prepare(session, to=relay.address, data=data, purpose=PURPOSE, gas=gas)
        except TxRejected as exc:  # the relay isolates items, so this is the node refusing the whole call
            session.rollback()
            log.error("transfer batch rejected", extra={"fields": {"reason": exc.reason}})
            return 0
        tx_hash = _first_hash(session, tx.id or 0)
        # One statement for the whole batch (the ORM's flush updated them one object at a time).
        submitted = {"tx_id": tx.id, "status": TransferStatus.submitted, "updated_at": utcnow()}
        session.execute(update(TRANSFERS).where(TRANSFERS.c.id.in_([t.id for t in batch])).values(submitted))
        for t in batch:
            steps.add(t, StepKind.submitted, tx_hash=tx_hash, batch_size=len(batch), relay=relay.address)
        steps.write()
        ctx.commit_background(session)
    crash_point("transfer.after_submit")
    ctx.relayer.kick()
    return len(batch)


def relay_calldata(items: list[tuple[Any, ...]]) -> str:
    """The call data of relay(items), encoded here: web3's contract layer (ABI lookup, argument checks and
    conversions) cost more CPU than the rest of a batch of a hundred transfers, and eth_abi's encoder about
    0.3 ms an item. Every field of an item is a static type, so the array is its offset, its length and
    nine words an item (tests/api/test_relay_calldata.py checks it against the contract's ABI)."""
    words = [RELAY_SELECTOR, uint_word(32), uint_word(len(items))]
    for sender, to, value, valid_after, valid_before, nonce, v, r, s in items:
        words += (address_word(sender), address_word(to), uint_word(value))
        words += (uint_word(valid_after), uint_word(valid_before), bytes32_word(nonce))
        words += (uint_word(v, bits=8), bytes32_word(r), bytes32_word(s))
    return "0x" + b"".join(words).hex()


def _first_hash(session: Session, tx_id: int) -> str:

    attempt = session.exec(select(TxAttempt).where(col(TxAttempt.tx_id) == tx_id)).first()
    return attempt.tx_hash if attempt else ""


def _revert_text(data: bytes) -> str:
    if data[:4] == bytes.fromhex("08c379a0"):
        try:
            return str(abi_decode(["string"], data[4:])[0])
        except Exception:
            pass
    return "0x" + data.hex() if data else "reverted without a reason"


def register_completions(completions: Completions, ctx: Context) -> None:
    completions.register(PURPOSE, make_batch_hook(ctx))


def make_batch_hook(ctx: Context) -> Callable[[Session, OutgoingTx, Purpose], None]:
    def on_batch_final(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:

        transfers = list(
            session.exec(
                select(Transfer)
                .options(WITHOUT_TYPED_DATA)
                .where(col(Transfer.tx_id) == tx.id, col(Transfer.status) == TransferStatus.submitted)
            )
        )
        steps = StepLog(session, transfers)
        if tx.status != TxStatus.confirmed:
            now = chain_now(ctx)
            for t in transfers:
                if now < t.valid_before - 5:  # nothing moved; the nonce is unused: relay it again
                    t.status, t.tx_id, t.updated_at = TransferStatus.authorized, None, utcnow()
                    session.add(t)
                    steps.add(t, StepKind.requeued, reason=tx.error or "batch failed")
                else:
                    fail(session, t, f"relay transaction failed: {tx.error}", steps)
            steps.write()
            return
        receipt = ctx.relayer.receipt(tx.tx_hash or "")
        if receipt is None:
            raise RuntimeError(f"no receipt for the final transaction {tx.tx_hash}")  # retried next pass
        coin = ctx.coin.address.lower()
        used: set[str] = set()
        failed: dict[str, str] = {}
        for lg in receipt["logs"]:  # as the node sends them: hex strings
            topics = [str(t).lower() for t in lg["topics"]]
            if not topics:
                continue
            nonce = topics[2] if len(topics) > 2 else ""
            if topics[0] == USED_TOPIC and str(lg["address"]).lower() == coin:
                used.add(nonce)
            elif topics[0] == FAILED_TOPIC:
                failed[nonce] = _revert_text(abi_decode(["bytes"], HexBytes(lg["data"]))[0])
        block = {"block_number": tx.block_number, "block_hash": tx.block_hash, "tx_hash": tx.tx_hash}
        confirmed = []
        for t in transfers:
            key = t.nonce.lower()
            steps.add(t, StepKind.mined, **block)
            if key in used:
                confirmed.append(t.id)
                steps.add(t, StepKind.confirmed, confirmations=ctx.settings.confirmations)
            else:
                fail(session, t, failed.get(key, "the relay did not report this authorization"), steps)
        if confirmed:  # one statement (the ORM's flush updated them one object at a time)
            done = {"status": TransferStatus.confirmed, "updated_at": utcnow()}
            session.execute(update(TRANSFERS).where(TRANSFERS.c.id.in_(confirmed)).values(done))
        steps.write()

    return on_batch_final


def wake_batcher(ctx: Context) -> None:
    """Asks the batcher thread for a pass now; without one (a CLI, a test), relays inline.

    In an API process that does not hold the background lease, `batcher_wake` is an event no thread
    waits on: the batcher of the process that holds it finds the transfer on its next pass (`interval`).
    """
    event = ctx.batcher_wake
    if event is None:
        submit_batch(ctx)
    else:
        event.set()


class TransferBatcher(Worker):
    """Relays authorised transfers: woken by each authorisation in this process, and every `interval`
    for anything else (authorised by another API worker process, or left behind by a restart)."""

    def __init__(self, ctx: Context, interval: float = 0.2, linger: float = 0.05) -> None:
        # linger: a short wait so authorisations arriving together share one transaction
        pacing = Pacing(interval, busy_interval=interval, backoff_first=interval, backoff_max=5.0)
        super().__init__("transfer-batcher", [self.submit], pacing, linger=linger)
        self.ctx = ctx
        self._previous: threading.Event | None = None

    def submit(self) -> int:
        if not has_authorized(self.ctx):  # the usual idle pass: nothing authorised, no session
            return 0
        return submit_batch(self.ctx)

    def start(self) -> None:
        self._previous = self.ctx.batcher_wake
        self.ctx.batcher_wake = self.wake
        super().start()

    def stop(self) -> None:
        # a follower again (previous set): authorisations leave their transfers to the leader's batcher
        self.ctx.batcher_wake = self._previous
        super().stop()
