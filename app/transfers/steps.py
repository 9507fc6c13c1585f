"""A transfer's ordered, append-only steps (each also a live event for its sender), and its failure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, col, func, select

from app.core.money import format_amount
from app.core.security import utcnow
from app.events.service import emit
from app.transfers.models import StepKind, Transfer, TransferStatus, TransferStep


class StepLog:
    """Appends steps to some transfers, and the matching live events for the sender (and for the
    recipient once final). The transfers' last sequence numbers are read in one query, whatever their
    number (a batch of 150 is one statement, not 150); `new=True` for transfers created just now."""

    def __init__(self, session: Session, transfers: Iterable[Transfer], *, new: bool = False) -> None:
        self.session = session
        ids = [t.id for t in transfers]
        if new or not ids:
            self._next = dict.fromkeys(ids, 1)
        else:
            rows = session.exec(
                select(TransferStep.transfer_id, func.max(TransferStep.seq))
                .where(col(TransferStep.transfer_id).in_(ids))
                .group_by(col(TransferStep.transfer_id))
            ).all()
            last = {tid: int(seq or 0) for tid, seq in rows}
            self._next = {i: last.get(i, 0) + 1 for i in ids}

    def add(self, transfer: Transfer, kind: StepKind, **details: Any) -> None:
        seq = self._next[transfer.id]
        self._next[transfer.id] = seq + 1
        session = self.session
        session.add(TransferStep(transfer_id=transfer.id, seq=seq, kind=kind, at=utcnow(), details=details))
        emit(session, transfer.user_id, "transfer.step", transfer_id=transfer.id, step=kind, **details)
        if kind == StepKind.confirmed and transfer.to_user_id is not None:
            emit(
                session,
                transfer.to_user_id,
                "transfer.received",
                transfer_id=transfer.id,
                amount=format_amount(transfer.amount),
                from_address=transfer.from_address,
            )


def fail(session: Session, transfer: Transfer, reason: str, steps: StepLog | None = None) -> None:
    transfer.status, transfer.failure_reason, transfer.updated_at = TransferStatus.failed, reason, utcnow()
    session.add(transfer)
    (steps or StepLog(session, [transfer])).add(transfer, StepKind.failed, reason=reason)
