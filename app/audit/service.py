"""Append-only, hash-chained audit log: each entry's hash covers the previous hash and its own content."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, update
from sqlmodel import Session, col, select

from app.audit.models import AuditEntry, AuditHead
from app.core.security import utcnow
from app.users.models import User
from common.sql import insert_ignore

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


_HEAD: Table = AuditHead.__table__  # type: ignore[attr-defined]
_ENTRIES: Table = AuditEntry.__table__  # type: ignore[attr-defined]
# Takes the head row's lock (serialising writers) and returns the new entry's seq and the previous hash.
_BUMP_HEAD = (
    update(_HEAD).where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq + 1).returning(_HEAD.c.seq, _HEAD.c.hash)
)
# Statements built once, their values passed at execution: building `.values(...)` with literals on each
# call (and SQLAlchemy's cache key over each of them) cost more than executing them.
_INSERT_ENTRY = insert(_ENTRIES)
_SET_HEAD_HASH = update(_HEAD).where(_HEAD.c.id == 1)


def record(
    session: Session,
    actor: User | None,
    action: str,
    *,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> None:
    """Appends one entry in the caller's transaction. Updating the head row first serialises writers.
    Three Core statements (bump the head and read it, insert the entry, store the head's hash): the ORM
    version loaded, refreshed and flushed the head, six statements and most of a mint's completion."""
    record_by(
        session,
        actor.id if actor else None,
        actor.email if actor else None,
        action,
        target=target,
        details=details,
        outcome=outcome,
    )


def record_by(
    session: Session,
    actor_id: int | None,
    actor_email: str | None,
    action: str,
    *,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> None:
    """As `record`, for a caller that has the actor's id and email but not the user row."""
    details = details or {}
    head = session.execute(_BUMP_HEAD).first()
    if head is None:  # the first entry ever: of two first writers at once, one inserts, both then bump
        insert_ignore(session, _HEAD, [{"id": 1, "seq": 0, "hash": GENESIS}])
        head = session.execute(_BUMP_HEAD).one()
    seq, prev_hash = int(head[0]), str(head[1])
    now = utcnow()
    at = now.replace(microsecond=(now.microsecond // 1000) * 1000)
    digest = entry_hash(prev_hash, seq, at, actor_id, action, target, details, outcome)
    # the row's values as a dict: building the AuditEntry model (which no caller used) cost more than
    # the insert
    entry = {
        "seq": seq,
        "at": at,
        "actor_id": actor_id,
        "actor_email": actor_email,
        "action": action,
        "target": target,
        "details": details,
        "outcome": outcome,
        "prev_hash": prev_hash,
        "hash": digest,
    }
    session.execute(_INSERT_ENTRY, entry)
    session.execute(_SET_HEAD_HASH, {"hash": digest})


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
