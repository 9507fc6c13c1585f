"""Append-only, hash-chained audit log: each entry's hash covers the previous hash and its own content."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from app.audit.models import AuditEntry, AuditHead
from app.core.security import utcnow
from app.users.models import User

GENESIS = "0" * 64


def entry_hash(
    prev_hash: str,
    seq: int,
    at: datetime,
    actor_id: int | None,
    action: str,
    target: str | None,
    details: dict[str, Any],
    outcome: str,
) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "at": at.isoformat(),
            "actor_id": actor_id,
            "action": action,
            "target": target,
            "details": details,
            "outcome": outcome,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def record(
    session: Session,
    actor: User | None,
    action: str,
    *,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> AuditEntry:
    """Appends one entry in the caller's transaction. Updating the head row first serialises writers."""
    details = details or {}
    if session.get(AuditHead, 1) is None:
        session.add(AuditHead(id=1, seq=0, hash=GENESIS))
        session.flush()
    session.exec(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=AuditHead.seq + 1))  # type: ignore[call-overload]
    head = session.exec(select(AuditHead).where(col(AuditHead.id) == 1)).one()
    session.refresh(head)
    at = utcnow().replace(microsecond=(utcnow().microsecond // 1000) * 1000)
    actor_id = actor.id if actor else None
    digest = entry_hash(head.hash, head.seq, at, actor_id, action, target, details, outcome)
    entry = AuditEntry(
        seq=head.seq,
        at=at,
        actor_id=actor_id,
        actor_email=actor.email if actor else None,
        action=action,
        target=target,
        details=details,
        outcome=outcome,
        prev_hash=head.hash,
        hash=digest,
    )
    head.hash = digest
    session.add(entry)
    session.add(head)
    session.flush()
    return entry


def verify(session: Session) -> tuple[bool, int | None]:
    """Walks the chain; returns (intact, first broken seq)."""
    prev = GENESIS
    for e in session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))):
        at = e.at if e.at.tzinfo else e.at.replace(tzinfo=utcnow().tzinfo)
        expected = entry_hash(prev, e.seq, at, e.actor_id, e.action, e.target, e.details, e.outcome)
        if e.prev_hash != prev or e.hash != expected:
            return False, e.seq
        prev = e.hash
    return True, None


def list_entries(session: Session, limit: int, before: int | None) -> list[AuditEntry]:
    q = select(AuditEntry).order_by(col(AuditEntry.seq).desc()).limit(limit)
    if before is not None:
        q = q.where(col(AuditEntry.seq) < before)
    return list(session.exec(q))
