"""A transfer's ordered, append-only steps (each also a live event for its sender), and its failure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BindParameter, Table, bindparam, func, select
from sqlmodel import Session

from app.core.money import format_amount
from app.core.security import utcnow
from app.events.service import emit_rows
from app.transfers.models import StepKind, Transfer, TransferStatus, TransferStep
from app.transfers.schemas import StepPublic

STEPS: Table = TransferStep.__table__  # type: ignore[attr-defined]
# Built once (an authorisation reads one transfer's steps, a batch the last step of each): their cache
# keys are computed once; building and keying a statement per call cost more than running it.
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_STEPS_OF_ONE = STEPS.select().where(STEPS.c.transfer_id == bindparam("transfer_id")).order_by(STEPS.c.seq)
_STEPS_OF = STEPS.select().where(STEPS.c.transfer_id.in_(_IDS)).order_by(STEPS.c.seq)
_LAST_SEQ = (
    select(STEPS.c.transfer_id, func.max(STEPS.c.seq))
    .where(STEPS.c.transfer_id.in_(_IDS))
    .group_by(STEPS.c.transfer_id)
)
_INSERT_STEPS = STEPS.insert()


class StepLog:
    """Appends steps to some transfers, and the matching live events for the sender (and for the
    recipient once final); `write()` stores them, in as many statements as there are tables, whatever
    the number of transfers (a batch of 150 too). The transfers' last sequence numbers are read in one
    query; `new=True` for transfers created just now, `read=True` to read their steps so far as well, so
    that an answer can show every step without reading them again (`steps_of`)."""

    def __init__(
        self, session: Session, transfers: Iterable[Transfer], *, new: bool = False, read: bool = False
    ) -> None:
        self.session = session
        ids = [t.id for t in transfers]
        self._keep = new or read
        self._steps: dict[str, list[StepPublic]] = {i: [] for i in ids}
        self._rows: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        if new or not ids:
            self._next = dict.fromkeys(ids, 1)
        elif read:
            one = len(ids) == 1
            query = _STEPS_OF_ONE if one else _STEPS_OF
            for row in session.execute(query, {"transfer_id": ids[0]} if one else {"ids": ids}):
                step = StepPublic(seq=row.seq, kind=row.kind, at=row.at, details=row.details)
                self._steps[row.transfer_id].append(step)
            self._next = {i: (self._steps[i][-1].seq if self._steps[i] else 0) + 1 for i in ids}
        else:
            rows = session.execute(_LAST_SEQ, {"ids": ids}).all()
            last = {tid: int(seq or 0) for tid, seq in rows}
            self._next = {i: last.get(i, 0) + 1 for i in ids}

    def add(self, transfer: Transfer, kind: StepKind, **details: Any) -> None:
        seq = self._next[transfer.id]
        self._next[transfer.id] = seq + 1
        at = utcnow()
        self._rows.append(
            {"transfer_id": transfer.id, "seq": seq, "kind": kind, "at": at, "details": details}
        )
        if self._keep:
            self._steps[transfer.id].append(StepPublic(seq=seq, kind=kind, at=at, details=details))
        data = {"transfer_id": transfer.id, "step": kind, **details}
        self._events.append({"user_id": transfer.user_id, "kind": "transfer.step", "at": at, "data": data})
        if kind == StepKind.confirmed and transfer.to_user_id is not None:
            received = {
                "transfer_id": transfer.id,
                "amount": format_amount(transfer.amount),
                "from_address": transfer.from_address,
            }
            self._events.append(
                {"user_id": transfer.to_user_id, "kind": "transfer.received", "at": at, "data": received}
            )

    def write(self) -> None:
        """Stores the steps added so far, in the session's transaction (after its pending changes, such
        as a new transfer row the steps refer to)."""
        if not self._rows:
            return
        self.session.flush()
        self.session.execute(_INSERT_STEPS, self._rows)
        emit_rows(self.session, self._events)
        self._rows, self._events = [], []

    def steps_of(self, transfer_id: str) -> list[StepPublic]:
        return list(self._steps[transfer_id])


def fail(session: Session, transfer: Transfer, reason: str, steps: StepLog | None = None) -> None:
    """Marks `transfer` failed; its step goes into `steps` (written by its owner), or is written now."""
    transfer.status, transfer.failure_reason, transfer.updated_at = TransferStatus.failed, reason, utcnow()
    session.add(transfer)
    log = steps or StepLog(session, [transfer])
    log.add(transfer, StepKind.failed, reason=reason)
    if steps is None:
        log.write()
