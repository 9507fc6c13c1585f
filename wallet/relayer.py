"""The relayer: every on-chain write of the platform goes through here.

- Nonces are ours: allocated by an UPDATE ... RETURNING on a counter row, in the same database transaction
  that stores the outgoing transaction and its signed bytes (web3's own nonce filling races).
- Signed bytes are stored before they are broadcast; re-sending the same bytes is always safe.
- One worker thread broadcasts in nonce order, at most `max_in_flight` ahead of the chain, watches new
  blocks for every hash we signed (replacements too) and bumps fees of transactions stuck too long.
- After a crash, the worker finds the stored rows and finishes them: nothing is lost or sent twice.
- With several processes only one runs the worker (the caller's lease decides; ``fence`` renews it in
  each of the worker's transactions); the others are on ``standby``: they prepare and wait, never watch.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hexbytes import HexBytes
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from web3 import Web3
from web3.exceptions import ContractLogicError

from common.worker import Pacing, Worker
from wallet.chain import raw_call
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
BUMP_NUMERATOR = 115  # +15%: above the 10% every pool demands, with a margin for rounding
GAS_MARGIN_NUM, GAS_MARGIN_DEN = 5, 4  # estimate x 1.25 (web3py-ext's 3x wastes block space)


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
        # The broadcast/watch loop; a failing node or database is retried at once, then less and less often.
        self.worker = Worker(
            "relayer",
            [self.step],
            Pacing(idle_interval, busy_interval=poll_interval, backoff_first=poll_interval, backoff_max=2.0),
        )
        self._fees: Fees | None = None
        self._last_block: int | None = None
        self._recheck = True
        self._chain_nonce: tuple[int, int] | None = None  # (block, confirmed nonce): changes only with blocks
        self._receipts: dict[str, dict[str, Any]] = {}  # raw receipts of transactions just made final
        # Who finishes each kind of final transaction: the domains register their handlers at start-up.
        self.completions = Completions()
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
        session.add(row)
        session.flush()
        self._add_attempt(session, row, fees.max_fee, fees.tip)
        return row

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
        block = self.w3.eth.get_block("latest")
        base = int(block.get("baseFeePerGas", 0) or 0)
        try:
            tip = int(self.w3.eth.max_priority_fee)
        except ValueError:
            tip = 10**9
        self._fees = Fees(max_fee=2 * base + tip, tip=tip, fetched=time.monotonic())
        return self._fees

    def _allocate_nonce(self, session: Session) -> int:
        """UPDATE first, so the row lock (PostgreSQL) or write lock (SQLite) serialises allocations."""
        stmt = (
            update(NonceCounter)
            .where(col(NonceCounter.chain_id) == self.chain_id, col(NonceCounter.address) == self.address)
            .values(next_nonce=NonceCounter.next_nonce + 1)
            .returning(col(NonceCounter.next_nonce))
        )
        result = session.exec(stmt).first()  # type: ignore[call-overload]
        if result is not None:
            return int(result[0]) - 1
        # First use on this chain: start from what the chain knows (deployments may have used nonces).
        start = int(self.w3.eth.get_transaction_count(self.address, "pending"))  # type: ignore[arg-type]
        session.add(NonceCounter(chain_id=self.chain_id, address=self.address, next_nonce=start + 1))
        session.flush()
        return start

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
        session.add(attempt)
        session.flush()
        return attempt

    # -- the worker -------------------------------------------------------------------------------

    def kick(self) -> None:
        self.worker.kick()

    def start(self) -> None:
        self.worker.start()  # a stopped run still finishing its pass is waited for: one relayer thread

    def stop(self) -> None:
        self.worker.stop()

    def step(self) -> bool:
        """One pass: watch blocks, broadcast pending in nonce order, replace stuck ones. True if busy."""
        with Session(self.engine, expire_on_commit=False) as session:
            open_rows = session.exec(
                select(OutgoingTx)
                .where(
                    col(OutgoingTx.chain_id) == self.chain_id,
                    col(OutgoingTx.sender) == self.address,
                    col(OutgoingTx.status).in_((TxStatus.pending, TxStatus.sent)),
                )
                .order_by(col(OutgoingTx.nonce))
            ).all()
            if not open_rows:
                return False
            latest = int(self.w3.eth.block_number)
            self._watch(session, list(open_rows), latest)
            now = utcnow()
            due = [  # to send, or sent long enough ago to be a candidate for a replacement
                r
                for r in open_rows
                if r.status == TxStatus.pending
                or (
                    r.status == TxStatus.sent
                    and (now - _aware(r.updated_at)).total_seconds() > self.replace_after
                )
            ]
            self._broadcast(session, due, latest)
            self._commit(session)
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
        rows = session.exec(
            select(TxAttempt).where(col(TxAttempt.tx_id).in_(tx_ids)).order_by(col(TxAttempt.id))
        ).all()
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
        for row in sent:
            receipt = None
            for attempt in attempts.get(row.id or 0, []):
                receipt = self._receipt(attempt.tx_hash)
                if receipt is not None:
                    break
            if receipt is None:
                # The nonce was used, but by none of our hashes: someone else spent it.
                row.status, row.error = (
                    TxStatus.failed,
                    "nonce used by a transaction this relayer did not sign",
                )
            else:
                if latest - int(receipt["blockNumber"], 16) + 1 < self.confirmations:
                    self._recheck = True  # look again at the next block even if nothing else changes
                    continue
                row.tx_hash = HexBytes(receipt["transactionHash"]).hex()
                row.block_number = int(receipt["blockNumber"], 16)
                row.block_hash = HexBytes(receipt["blockHash"]).hex()
                row.gas_used = int(receipt["gasUsed"], 16)
                self._receipts[row.tx_hash] = receipt
                if int(receipt["status"], 16) == 1:
                    row.status = TxStatus.confirmed
                else:
                    row.status, row.error = TxStatus.failed, "reverted on chain"
            row.updated_at = utcnow()
            finished.append(row)
        try:
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
                self._done.notify_all()

    def _receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """The receipt as the node sends it (hex strings): web3's formatters cost more than the call."""
        # A node that cannot be reached raises: the pass is retried, nothing is concluded from silence.
        # An error answer says nothing about the transaction: it raises too.
        result = raw_call(self.w3, "eth_getTransactionReceipt", [tx_hash])
        return dict(result) if result else None

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """For completion handlers: the raw receipt the watcher just read (no second call), else the node's."""
        cached = self._receipts.get(tx_hash)
        return cached if cached is not None else self._receipt(tx_hash)

    def _broadcast(self, session: Session, rows: list[OutgoingTx], block: int) -> None:
        if not rows:
            return
        chain_nonce = self._confirmed_nonce(block)
        attempts = self._attempts(session, [r.id for r in rows if r.id is not None])
        now = utcnow()
        for row in rows:
            if row.nonce >= chain_nonce + self.max_in_flight:
                break  # queued: Kaia guarantees 16 executable slots per account
            latest = attempts[row.id or 0][-1]
            if row.status == TxStatus.pending:
                self._send(latest)
                crash_point(f"relayer.after_broadcast:{row.purpose}")
                latest.sent_at = now
                row.status = TxStatus.sent
                row.updated_at = now
                session.add(latest)
            elif latest.sent_at and (now - _aware(latest.sent_at)).total_seconds() > self.replace_after:
                self._replace(session, row, latest)

    def _replace(self, session: Session, row: OutgoingTx, latest: TxAttempt) -> None:
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
            return
        attempt = self._add_attempt(session, row, max_fee, tip)
        # The new bytes are stored before they leave the process, and the row is pending again until they
        # have: if this process dies (or loses its lease) in between, the next pass sends the newest bytes.
        row.status = TxStatus.pending
        session.add(row)
        self._commit(session, wrote=True)
        self._send(attempt)
        row.status = TxStatus.sent
        attempt.sent_at = row.updated_at = utcnow()
        session.add(attempt)
        session.add(row)
        log.warning(
            "replaced a stuck transaction",
            extra={"fields": {"nonce": row.nonce, "old": latest.tx_hash, "new": attempt.tx_hash}},
        )

    def _send(self, attempt: TxAttempt) -> None:
        try:
            self.w3.eth.send_raw_transaction(HexBytes(attempt.raw))
        except ValueError as exc:
            message = str(exc).lower()
            # Re-sent bytes the node already has, or a nonce already mined: the watcher resolves both.
            if not any(s in message for s in ("already known", "nonce too low", "already imported")):
                log.warning("broadcast failed", extra={"fields": {"tx": attempt.tx_hash, "error": message}})

    # -- waiting ----------------------------------------------------------------------------------

    def wait(self, tx_id: int, timeout: float | None = None) -> OutgoingTx:
        """Blocks until the transaction is final or the timeout passes; returns its row either way."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.replace_after * 4)
        self.kick()
        while True:
            with Session(self.engine, expire_on_commit=False) as session:
                row = session.get(OutgoingTx, tx_id)
                if row is None:
                    raise KeyError(tx_id)
                if row.status in FINAL or time.monotonic() >= deadline:
                    return row
            if not self.worker.running and not self.standby:
                self.step()
                time.sleep(self.poll_interval)
            else:
                with self._done:
                    self._done.wait(self.poll_interval * 4)

    def balance(self) -> int:
        return int(self.w3.eth.get_balance(self.address))


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _revert_reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(exc.args[0] if exc.args else None, dict):
        message = str(exc.args[0].get("message", message))
    return str(message).removeprefix("execution reverted: ")[:300]
