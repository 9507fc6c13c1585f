"""The relayer: every on-chain write of the platform goes through here.

- Nonces are ours: allocated by an UPDATE ... RETURNING on a counter row, in the same database transaction
  that stores the outgoing transaction and its signed bytes (web3's own nonce filling races).
- Signed bytes are stored before they are broadcast; re-sending the same bytes is always safe.
- One worker thread broadcasts in nonce order, at most `max_in_flight` ahead of the chain, watches new
  blocks for every hash we signed (replacements too) and bumps fees of transactions stuck too long.
- After a crash, the worker finds the stored rows and finishes them: nothing is lost or sent twice.
- With several processes only one runs the worker (the caller's lease decides; ``fence`` renews it in
  each of the worker's transactions); the others are on ``standby``: they prepare and wait, never watch.
- A relayer given ``kinds`` sends, bumps and finishes only the transactions of those purpose kinds (the
  standalone collector: its anchors and reward mints); without, every transaction of the account (the
  service). Two relayers may so share a kind: each status change is a compare-and-set on the status the
  pass read, so a transaction is finished, and its completion run, exactly once.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from hexbytes import HexBytes
from sqlalchemy import ColumnElement, Table, bindparam, func, insert, not_, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select
from web3 import Web3
from web3.exceptions import ContractLogicError

from common.sql import insert_ignore
from common.worker import Pacing, Worker
from wallet.chain import ChainUnreachable, raw_call
from wallet.models import NonceCounter, OutgoingTx, TxAttempt
from wallet.purposes import Completions, Purpose, TxPurpose
from wallet.signer import Signer


def crash_point(name: str) -> None:
    """ESSX_CRASH_AT=name kills the process here (crash-safety tests only)."""
    if os.environ.get("ESSX_CRASH_AT") == name:
        os._exit(137)


log = logging.getLogger(__name__)


class TxStatus(enum.StrEnum):
    """A relay transaction's state (``OutgoingTx.status``): pending -> sent -> confirmed | failed; a fee
    bump makes a sent transaction pending again until its replacement has left."""

    pending = "pending"
    sent = "sent"
    confirmed = "confirmed"
    failed = "failed"


FINAL = (TxStatus.confirmed, TxStatus.failed)
OPEN = (TxStatus.pending, TxStatus.sent)
BUMP_NUMERATOR = 115  # +15%: above the 10% every pool demands, with a margin for rounding
GAS_MARGIN_NUM, GAS_MARGIN_DEN = 5, 4  # estimate x 1.25 (web3py-ext's 3x wastes block space)
WAIT_FALLBACK = 1.0  # seconds: a waiter told by the worker of this process reads its row at least this often
# After a kick, the worker waits this long for more before its pass: requests answered by one block come
# back together, so their next transactions arrive within milliseconds of each other and leave in one
# pass (one read of the rows, one commit) instead of a pass each. A few ms against a block of a second.
GATHER_SECONDS = 0.02
RECEIPT_BATCH = 100  # receipts asked for in one JSON-RPC batch
# Rows the worker made final lately, kept for waiters: 16 blocks of a full in-flight window (16 per
# account). Few, because a batch row holds its call data (tens of kB); a waiter whose row has left reads it.
FINAL_ROWS_KEPT = 256


class TxRejected(RuntimeError):
    """The chain would revert this call (found by estimating gas): nothing was signed or stored."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Fees:
    max_fee: int
    tip: int
    fetched: float


class Relayer:
    def __init__(
        self,
        engine: Engine,
        w3: Web3,
        signer: Signer,
        chain_id: int,
        *,
        max_in_flight: int = 16,
        replace_after: float = 30.0,
        max_fee: int | None = None,
        confirmations: int = 1,
        poll_interval: float = 0.05,
        idle_interval: float = 0.25,
        kinds: frozenset[TxPurpose] | None = None,
        gather: float = GATHER_SECONDS,
    ) -> None:
        self.engine = engine
        self.w3 = w3
        self.signer = signer  # signs; the key stays inside it (wallet/signer.py)
        self.address = Web3.to_checksum_address(signer.address)
        self.chain_id = chain_id
        self.max_in_flight = max_in_flight
        self.replace_after = replace_after
        # No fee bump above this (wei per gas): a stuck transaction then waits for the fees to fall
        # rather than paying without bound (OpenZeppelin's relayer caps its bumps the same way).
        self.max_fee = max_fee
        self._capped: set[int] = set()  # rows already logged as waiting at the cap
        self.confirmations = max(1, confirmations)
        self.poll_interval = poll_interval
        # Idle passes are one indexed SELECT; short, because work may come from other processes.
        self.idle_interval = idle_interval
        self._done = threading.Condition()
        # Waiters in this process by transaction id (a count each), and the rows this worker made final
        # lately (committed, not changed again): a waiter is told and handed its row, with no read of its
        # own, not woken by every other waiter's row.
        self._waiters: dict[int, int] = {}
        self._final_rows: OrderedDict[int, OutgoingTx] = OrderedDict()
        # The broadcast/watch loop; a failing node or database is retried at once, then less and less often.
        self.worker = Worker(
            "relayer",
            [self.step],
            Pacing(idle_interval, busy_interval=poll_interval, backoff_first=poll_interval, backoff_max=2.0),
            linger=gather,
        )
        self._fees: Fees | None = None
        self._last_block: int | None = None
        self._recheck = True
        self._kicked = True
        self._empty = False  # the last pass found no open row: the next one, unless kicked, only probes
        self._quiet_until = 0.0  # monotonic time until which a pass waits for a new block only (step)
        self._chain_nonce: tuple[int, int] | None = None  # (block, confirmed nonce): changes only with blocks
        self._receipts: dict[str, dict[str, Any]] = {}  # raw receipts of transactions just made final
        # Who finishes each kind of final transaction: the domains register their handlers at start-up.
        self.completions = Completions()
        # The purpose kinds this relayer acts on (None: all). A process that finishes only some kinds
        # must not send or finish the others: their handlers live in another process.
        self.kinds = kinds
        # Set by the process that holds the background lease: renews it inside each of the worker's
        # transactions and raises (rolling the transaction back) once another process holds it.
        self.fence: Callable[[Session], None] | None = None
        # Another process runs the worker: `wait` polls the database instead of stepping itself.
        self.standby = False

    # -- preparing: inside the caller's database transaction --------------------------------------

    def prepare(
        self,
        session: Session,
        *,
        to: str | None,
        data: bytes | str,
        purpose: Purpose | TxPurpose,
        value: int = 0,
        gas: int | None = None,
    ) -> OutgoingTx:
        """Estimates, allocates a nonce, signs and stores. The caller commits; then call `kick()`."""
        data_hex = HexBytes(data).hex() if data else "0x"
        if not data_hex.startswith("0x"):
            data_hex = "0x" + data_hex
        if gas is None:
            gas = self.estimate_gas(to=to, data=data_hex, value=value)
        fees = self.fees()
        nonce = self._allocate_nonce(session)
        now = utcnow()
        row = OutgoingTx(
            chain_id=self.chain_id,
            sender=self.address,
            nonce=nonce,
            to=to,
            data=data_hex,
            value=value,
            gas=gas,
            purpose=str(purpose),
            status=TxStatus.pending,
            created_at=now,
            updated_at=now,
        )
        _insert(session, row, _INSERT_TX)
        self._add_attempt(session, row, fees.max_fee, fees.tip)
        return row

    def set_purpose(self, session: Session, row: OutgoingTx, purpose: Purpose | TxPurpose) -> None:
        """Names the row's purpose once the caller knows it (its record's id follows the row's): in the
        caller's transaction, by a Core UPDATE (the ORM's flush of the changed row cost more)."""
        session.execute(_SET_PURPOSE, {"row_id": row.id, "purpose": str(purpose)})
        set_committed_value(row, "purpose", str(purpose))

    def estimate_gas(self, *, to: str | None, data: str, value: int = 0) -> int:
        call: dict[str, Any] = {"from": self.address, "data": data, "value": value}
        if to:
            call["to"] = to
        try:
            estimate = int(self.w3.eth.estimate_gas(call))  # type: ignore[arg-type]
        except ContractLogicError as exc:
            raise TxRejected(_revert_reason(exc)) from None
        except ValueError as exc:  # node-specific error payloads
            raise TxRejected(_revert_reason(exc)) from None
        return estimate * GAS_MARGIN_NUM // GAS_MARGIN_DEN

    def fees(self) -> Fees:
        """EIP-1559 fees, refreshed once a second (a block on Kaia); Kaia type-2 pays min(base+tip, max)."""
        cached = self._fees
        if cached is not None and time.monotonic() - cached.fetched < 1.0:
            return cached
        # Raw calls: web3's formatting of a whole block (every transaction hash in it) cost more than the call.
        block = raw_call(self.w3, "eth_getBlockByNumber", ["latest", False])
        base = int(block.get("baseFeePerGas") or "0x0", 16)
        try:
            tip = int(raw_call(self.w3, "eth_maxPriorityFeePerGas", []), 16)
        except (RuntimeError, ValueError):  # a node without the method (an error answer)
            tip = 10**9
        self._fees = Fees(max_fee=2 * base + tip, tip=tip, fetched=time.monotonic())
        return self._fees

    def _allocate_nonce(self, session: Session) -> int:
        """UPDATE ... RETURNING on the counter row: its row lock (PostgreSQL) or the write lock (SQLite)
        serialises allocations. On first use the row is created with INSERT ... ON CONFLICT DO NOTHING
        and the UPDATE runs again: of several first allocations at once, one inserts, the others wait
        for its commit, insert nothing, and queue behind it on the row (a plain INSERT raised
        IntegrityError in all but one of them)."""
        taken = self._take_nonce(session)
        if taken is not None:
            return taken
        # First use on this chain: start from what the chain knows (deployments may have used nonces).
        start = int(self.w3.eth.get_transaction_count(self.address, "pending"))  # type: ignore[arg-type]
        row = {"chain_id": self.chain_id, "address": self.address, "next_nonce": start}
        insert_ignore(session, NonceCounter.__table__, [row])  # type: ignore[attr-defined]
        taken = self._take_nonce(session)
        if taken is None:  # the row exists now, whoever inserted it
            raise RuntimeError("nonce counter missing right after it was created")
        return taken

    def _take_nonce(self, session: Session) -> int | None:
        result = session.execute(_TAKE_NONCE, {"chain": self.chain_id, "sender": self.address}).first()
        return None if result is None else int(result[0]) - 1

    def _add_attempt(self, session: Session, row: OutgoingTx, max_fee: int, tip: int) -> TxAttempt:
        tx: dict[str, Any] = {
            "chainId": self.chain_id,
            "nonce": row.nonce,
            "gas": row.gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
            "value": row.value,
            "data": row.data,
            "type": 2,
        }
        if row.to:
            tx["to"] = row.to
        signed = self.signer.sign_transaction(tx)  # refuses another chain, checks the signature recovers
        attempt = TxAttempt(
            tx_id=row.id or 0,
            tx_hash=HexBytes(signed.hash).hex(),
            raw=HexBytes(signed.raw).hex(),
            max_fee_per_gas=max_fee,
            max_priority_fee_per_gas=tip,
            created_at=utcnow(),
        )
        _insert(session, attempt, _INSERT_ATTEMPT)
        return attempt

    # -- the worker -------------------------------------------------------------------------------

    def kick(self) -> None:
        self._kicked = True  # the next pass reads the rows, even while waiting for a block
        self.worker.kick()

    def start(self) -> None:
        missing = sorted(k for k in self.kinds or () if self.completions.handler(k) is None)
        if missing:  # it would finish them without their completion
            raise ValueError(f"relayer for kinds without a handler: {', '.join(missing)}")
        self.worker.start()  # a stopped run still finishing its pass is waited for: one relayer thread

    def stop(self) -> None:
        self.worker.stop()

    def step(self) -> bool:
        """One pass: watch blocks, broadcast pending in nonce order, replace stuck ones. True if busy."""
        # Every open row was sent and none is due for a fee bump: only a new block changes anything, so
        # the rows are not read again until one comes (or a kick, or `idle_interval` passes: rows of other
        # processes come without a kick).
        quiet = not self._kicked and not self._recheck and time.monotonic() < self._quiet_until
        if quiet and self._block_number() == self._last_block:
            return True
        if self._empty and not self._kicked and not self._any_open():
            return False
        self._kicked = False
        self._quiet_until = 0.0
        with Session(self.engine, expire_on_commit=False) as session:
            open_rows = session.exec(self._open_rows).all()
            self._empty = not open_rows
            if not open_rows:
                return False
            latest = self._block_number()
            self._watch(session, list(open_rows), latest)
            now = utcnow()
            due = [  # to send, or sent long enough ago to be a candidate for a replacement
                r
                for r in open_rows
                if r.status == TxStatus.pending
                or (r.status == TxStatus.sent and (now - r.updated_at).total_seconds() > self.replace_after)
            ]
            if self.kinds is not None and any(r.status == TxStatus.sent for r in due):
                # A row behind an open nonce of another kind waits for the relayer of that kind (the
                # service): a fee bump would not get it mined sooner, only make it dearer once it is.
                waits_from = self._first_open_of_other_kinds(session)
                if waits_from is not None:
                    due = [r for r in due if r.status == TxStatus.pending or r.nonce < waits_from]
            wrote = self._broadcast(session, due, latest)
            self._commit(session, wrote=wrote)
            if all(r.status != TxStatus.pending for r in open_rows):  # every open row has left
                # ... until the first of them could be due for a fee bump, at most `idle_interval`
                now = utcnow()
                bump_in = min(
                    (self.replace_after - (now - r.updated_at).total_seconds() for r in open_rows),
                    default=self.idle_interval,
                )
                self._quiet_until = time.monotonic() + min(self.idle_interval, bump_in)
            return True

    @cached_property
    def _open_rows(self) -> Any:
        """The statement reading our open rows in nonce order: built once (each pass built it again)."""
        return select(OutgoingTx).where(*self._open_conditions).order_by(col(OutgoingTx.nonce))

    @cached_property
    def _any_open_probe(self) -> Any:
        return select(_TX.c.id).where(*self._open_conditions).limit(1)

    @cached_property
    def _open_conditions(self) -> tuple[ColumnElement[bool], ...]:
        return (
            _TX.c.chain_id == self.chain_id,
            _TX.c.sender == self.address,
            _TX.c.status.in_(OPEN),
            *self._mine(),
        )

    def _any_open(self) -> bool:
        """Whether any open row of ours exists: an idle pass's one read (rows of other processes come
        without a kick), a Core query on a connection, a fifth of the ORM read of the rows in a session."""
        with self.engine.connect() as conn:
            return conn.execute(self._any_open_probe).first() is not None

    def _block_number(self) -> int:
        return int(raw_call(self.w3, "eth_blockNumber", []), 16)

    def _of_kinds(self) -> ColumnElement[bool] | None:
        """Rows of this relayer's kinds (None: all rows): the stored purpose is ``kind`` or ``kind:ref``."""
        if self.kinds is None:
            return None
        purpose = col(OutgoingTx.purpose)
        return or_(
            *(
                or_(purpose == k.value, purpose.startswith(f"{k.value}:", autoescape=True))
                for k in sorted(self.kinds)
            )
        )

    def _mine(self) -> list[ColumnElement[bool]]:
        of_kinds = self._of_kinds()
        return [] if of_kinds is None else [of_kinds]

    def _first_open_of_other_kinds(self, session: Session) -> int | None:
        of_kinds = self._of_kinds()
        if of_kinds is None:
            return None
        first = session.exec(
            select(func.min(OutgoingTx.nonce)).where(
                col(OutgoingTx.chain_id) == self.chain_id,
                col(OutgoingTx.sender) == self.address,
                col(OutgoingTx.status).in_(OPEN),
                not_(of_kinds),
            )
        ).one()
        return int(first) if first is not None else None

    def _move(self, session: Session, row: OutgoingTx, expected: tuple[TxStatus, ...], **values: Any) -> bool:
        """Compare-and-set: writes ``values`` only if the row is still in one of the ``expected`` states
        (another relayer sharing its kind may have moved it since this pass read it; PostgreSQL's row
        lock makes the second writer wait for the first and then see its result). True if written; the
        in-memory row then holds the values, without a second UPDATE from the session."""
        values["updated_at"] = values.get("updated_at") or utcnow()
        # A Core statement on the table (the ORM's bulk UPDATE, its session synchronisation, cost more),
        # built once per set of expected states; the values are passed at execution.
        stmt = _MOVES.get(expected)
        if stmt is None:
            stmt = _MOVES[expected] = _TX.update().where(
                _TX.c.id == bindparam("row_id"), _TX.c.status.in_(expected)
            )
        result = session.execute(stmt, {"row_id": row.id, **values})
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        for key, value in values.items():
            set_committed_value(row, key, value)
        return True

    def _commit(self, session: Session, *, wrote: bool = False) -> None:
        """Commits, fenced by the caller's lease when there is something to write (a pass that only
        looked commits nothing, and renewing the lease 20 times a second would be a write each time)."""
        if self.fence is not None and (wrote or session.new or session.dirty or session.deleted):
            self.fence(session)
        session.commit()

    def _confirmed_nonce(self, latest: int) -> int:
        """The account's nonce as of the latest block, read once a block (only a block can change it)."""
        cached = self._chain_nonce
        if cached is None or cached[0] != latest:
            nonce = int(self.w3.eth.get_transaction_count(self.address, latest))  # type: ignore[arg-type]
            cached = self._chain_nonce = (latest, nonce)
        return cached[1]

    def _attempts(self, session: Session, tx_ids: list[int]) -> dict[int, list[TxAttempt]]:
        result: dict[int, list[TxAttempt]] = {i: [] for i in tx_ids}
        rows = session.exec(_ATTEMPTS_OF, params={"tx_ids": tx_ids}).all()
        for a in rows:
            result[a.tx_id].append(a)
        return result

    def _watch(self, session: Session, rows: list[OutgoingTx], latest: int) -> None:
        sent = [r for r in rows if r.status == TxStatus.sent]
        if not sent:
            return
        if latest == self._last_block and not self._recheck:
            return  # no new block since the last look: nothing can have been mined
        self._last_block, self._recheck = latest, False
        chain_nonce = self._confirmed_nonce(latest)
        sent = [r for r in sent if r.nonce < chain_nonce]
        if not sent:
            return
        attempts = self._attempts(session, [r.id for r in sent if r.id is not None])
        finished: list[OutgoingTx] = []
        try:
            receipts = self._receipts_of([a.tx_hash for r in sent for a in attempts.get(r.id or 0, [])])
            for row in sent:
                receipt = None
                for attempt in attempts.get(row.id or 0, []):
                    receipt = receipts.get(attempt.tx_hash)
                    if receipt is not None:
                        break
                values: dict[str, Any]
                if receipt is None:
                    # The nonce was used, but by none of our hashes: someone else spent it.
                    values = {
                        "status": TxStatus.failed,
                        "error": "nonce used by a transaction this relayer did not sign",
                    }
                else:
                    if latest - int(receipt["blockNumber"], 16) + 1 < self.confirmations:
                        self._recheck = True  # look again at the next block even if nothing else changes
                        continue
                    ok = int(receipt["status"], 16) == 1
                    values = {
                        "tx_hash": HexBytes(receipt["transactionHash"]).hex(),
                        "block_number": int(receipt["blockNumber"], 16),
                        "block_hash": HexBytes(receipt["blockHash"]).hex(),
                        "gas_used": int(receipt["gasUsed"], 16),
                        "status": TxStatus.confirmed if ok else TxStatus.failed,
                        "error": None if ok else "reverted on chain",
                    }
                    self._receipts[values["tx_hash"]] = receipt
                # Final once: a relayer sharing this kind that got here first leaves nothing to write.
                if self._move(session, row, OPEN, **values):
                    finished.append(row)
            for row in finished:
                self.completions.dispatch(session, row)  # the one handler of its purpose, exactly once
            if finished:
                self._commit(session, wrote=True)  # the hooks' queries may have flushed already
        except BaseException:
            self._recheck = True  # nothing was recorded: look at these receipts again on the next pass
            raise
        finally:
            self._receipts.clear()
        if finished:
            with self._done:
                for row in finished:  # also those nobody waits for yet: a waiter may come just after
                    self._final_rows[row.id or 0] = row
                while len(self._final_rows) > FINAL_ROWS_KEPT:
                    self._final_rows.popitem(last=False)
                if any(r.id in self._waiters for r in finished):
                    self._done.notify_all()

    def _receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """The receipt as the node sends it (hex strings): web3's formatters cost more than the call."""
        # A node that cannot be reached raises: the pass is retried, nothing is concluded from silence.
        # An error answer says nothing about the transaction: it raises too.
        result = raw_call(self.w3, "eth_getTransactionReceipt", [tx_hash])
        return dict(result) if result else None

    def _receipts_of(self, hashes: list[str]) -> dict[str, dict[str, Any] | None]:
        """The receipts of these hashes (None: not mined), in one JSON-RPC batch per 100 where the
        provider batches (a round trip per transaction was most of a block's watching). As `_receipt`,
        an error answer raises."""
        batch = getattr(self.w3.provider, "batch", None)
        if batch is None or len(hashes) < 2:
            return {h: self._receipt(h) for h in hashes}
        found: dict[str, dict[str, Any] | None] = {}
        for i in range(0, len(hashes), RECEIPT_BATCH):
            chunk = hashes[i : i + RECEIPT_BATCH]
            results = batch([("eth_getTransactionReceipt", [h]) for h in chunk])
            found.update((h, dict(r) if r else None) for h, r in zip(chunk, results, strict=True))
        return found

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """For completion handlers: the raw receipt the watcher just read (no second call), else the node's."""
        cached = self._receipts.get(tx_hash)
        return cached if cached is not None else self._receipt(tx_hash)

    def _broadcast(self, session: Session, rows: list[OutgoingTx], block: int) -> bool:
        """Sends pending rows and bumps stuck ones; True if it wrote something."""
        if not rows:
            return False
        chain_nonce = self._confirmed_nonce(block)
        attempts = self._attempts(session, [r.id for r in rows if r.id is not None])
        now = utcnow()
        wrote = False
        for row in rows:
            if row.nonce >= chain_nonce + self.max_in_flight:
                break  # queued: Kaia guarantees 16 executable slots per account
            latest = attempts[row.id or 0][-1]
            if row.status == TxStatus.pending:
                self._send(latest)
                crash_point(f"relayer.after_broadcast:{row.purpose}")
                self._sent(session, latest, now)  # these bytes left, whoever records the row as sent
                self._move(session, row, (TxStatus.pending,), status=TxStatus.sent, updated_at=now)
                wrote = True
            elif latest.sent_at and (now - latest.sent_at).total_seconds() > self.replace_after:
                wrote = self._replace(session, row, latest) or wrote
        return wrote

    def _replace(self, session: Session, row: OutgoingTx, latest: TxAttempt) -> bool:
        fees = self.fees()
        max_fee = max(fees.max_fee, latest.max_fee_per_gas * BUMP_NUMERATOR // 100 + 1)
        tip = max(fees.tip, latest.max_priority_fee_per_gas * BUMP_NUMERATOR // 100 + 1)
        if self.max_fee is not None and max_fee > self.max_fee:
            if row.id not in self._capped:
                self._capped.add(row.id or 0)
                log.warning(
                    "fee bump capped: the transaction waits at its fee",
                    extra={"fields": {"tx": row.id, "max_fee": latest.max_fee_per_gas, "cap": self.max_fee}},
                )
            return False
        # The row is pending again until the new bytes have left: if this process dies (or loses its
        # lease) in between, the next pass sends the newest bytes. Claimed first (compare-and-set), so of
        # two relayers sharing the kind only one bumps, and none bumps a row that became final.
        if not self._move(session, row, (TxStatus.sent,), status=TxStatus.pending):
            return False
        attempt = self._add_attempt(session, row, max_fee, tip)  # stored before it leaves the process
        self._commit(session, wrote=True)
        self._send(attempt)
        self._sent(session, attempt, now := utcnow())
        self._move(session, row, (TxStatus.pending,), status=TxStatus.sent, updated_at=now)
        log.warning(
            "replaced a stuck transaction",
            extra={"fields": {"nonce": row.nonce, "old": latest.tx_hash, "new": attempt.tx_hash}},
        )
        return True

    @staticmethod
    def _sent(session: Session, attempt: TxAttempt, at: datetime) -> None:
        """Records when these bytes left (a Core UPDATE: the ORM's flush of the attempt cost more)."""
        session.execute(_ATTEMPT_SENT, {"attempt_id": attempt.id, "sent_at": at})
        set_committed_value(attempt, "sent_at", at)

    def _send(self, attempt: TxAttempt) -> None:
        """Broadcasts stored bytes. A node that cannot be reached raises (the pass is retried); an error
        answer is logged, unless it says the bytes or their nonce are known (the watcher resolves both).
        A raw request: web3's formatters and middlewares cost more CPU than the call."""
        raw = attempt.raw if attempt.raw.startswith("0x") else "0x" + attempt.raw
        try:
            raw_call(self.w3, "eth_sendRawTransaction", [raw])
        except RuntimeError as exc:  # an error answer (ChainUnreachable is not one: it propagates)
            if isinstance(exc, ChainUnreachable):
                raise
            message = str(exc).lower()
            if not any(s in message for s in ("already known", "nonce too low", "already imported")):
                log.warning("broadcast failed", extra={"fields": {"tx": attempt.tx_hash, "error": message}})

    # -- waiting ----------------------------------------------------------------------------------

    def wait(self, tx_id: int, timeout: float | None = None, *, fresh: bool = False) -> OutgoingTx:
        """Blocks until the transaction is final or the timeout passes; returns its row either way.

        While this process runs the worker for every kind, the worker hands a waiter its row when it has
        made it final (the row is read, as a fallback, once every WAIT_FALLBACK seconds); on standby, or
        when another relayer may finish it (``kinds``), it is read every few polls. ``fresh``: the caller
        has just committed the row (it is open, unless this worker finished it already): no first read."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.replace_after * 4)
        self.kick()
        with self._done:
            self._waiters[tx_id] = self._waiters.get(tx_id, 0) + 1
        try:
            skip_read = fresh
            while True:
                told = not self.standby and self.kinds is None and self.worker.running
                with self._done:
                    final = self._final_rows.get(tx_id)
                if final is not None:
                    return final
                if skip_read and told:
                    skip_read = False
                else:
                    with Session(self.engine, expire_on_commit=False) as session:
                        row = session.get(OutgoingTx, tx_id)
                        if row is None:
                            raise KeyError(tx_id)
                        if row.status in FINAL or time.monotonic() >= deadline:
                            return row
                if not self.worker.running and not self.standby:
                    self.step()
                    time.sleep(self.poll_interval)
                    continue
                read_by = time.monotonic() + (WAIT_FALLBACK if told else self.poll_interval * 4)
                with self._done:
                    while tx_id not in self._final_rows:
                        left = min(read_by, deadline) - time.monotonic()
                        if left <= 0:
                            break
                        self._done.wait(left)
                        if told and (self.standby or not self.worker.running):
                            break  # the lease moved, or the worker stopped: read the row now
        finally:
            with self._done:
                self._waiters[tx_id] -= 1
                if not self._waiters[tx_id]:
                    del self._waiters[tx_id]

    def balance(self) -> int:
        return int(self.w3.eth.get_balance(self.address))


_TX: Table = OutgoingTx.__table__  # type: ignore[attr-defined]
_NONCES: Table = NonceCounter.__table__  # type: ignore[attr-defined]
_ATTEMPTS: Table = TxAttempt.__table__  # type: ignore[attr-defined]
# Core statements built once, their values passed at execution (the ORM's bulk UPDATE, and building a
# statement with literals and its cache key on each call, cost more than executing them)
_TAKE_NONCE = (
    update(_NONCES)
    .where(_NONCES.c.chain_id == bindparam("chain"), _NONCES.c.address == bindparam("sender"))
    .values(next_nonce=_NONCES.c.next_nonce + 1)
    .returning(_NONCES.c.next_nonce)
)
_ATTEMPT_SENT = update(_ATTEMPTS).where(_ATTEMPTS.c.id == bindparam("attempt_id"))
_MOVES: dict[tuple[TxStatus, ...], Any] = {}  # _move's statement per tuple of expected states
_INSERT_TX = insert(_TX).returning(_TX.c.id)
_SET_PURPOSE = update(_TX).where(_TX.c.id == bindparam("row_id"))
_INSERT_ATTEMPT = insert(_ATTEMPTS).returning(_ATTEMPTS.c.id)
_ATTEMPTS_OF = (
    select(TxAttempt)
    .where(col(TxAttempt.tx_id).in_(bindparam("tx_ids", expanding=True)))
    .order_by(col(TxAttempt.id))
)


def _insert(session: Session, obj: OutgoingTx | TxAttempt, stmt: Any) -> None:
    """Inserts a new row by a Core statement, then puts the object in the session as the stored row (as
    if loaded: a caller's later change to it is an UPDATE). The ORM's flush of one new object cost more
    than the statement itself, on every transaction prepared."""
    obj.id = session.execute(stmt, obj.model_dump(exclude={"id"})).scalar_one()
    make_transient_to_detached(obj)
    session.add(obj)


def _revert_reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(exc.args[0] if exc.args else None, dict):
        message = str(exc.args[0].get("message", message))
    return str(message).removeprefix("execution reverted: ")[:300]
