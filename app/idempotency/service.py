"""Idempotency-Key handling for money-moving routes.

Same key and body: the first answer is replayed. Same key, another body: 422. Still running: 409.
A record whose lease ran out (its process died) is taken over by the next request with the same key;
the operation behind it is itself resumable, so taking over never applies anything twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.core.errors import IdempotencyKeyReused, MissingIdempotencyKey, RequestInProgress
from app.core.security import utcnow
from app.idempotency.models import IdempotencyRecord, IdempotencyState

LEASE = timedelta(seconds=120)
T = TypeVar("T")


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Claim:
    record: IdempotencyRecord
    replay: bool  # True: record.response_* holds the answer to send again
    resumed: bool  # True: an earlier attempt died; record.resource names what it started


def claim(session: Session, scope: str, key: str | None, body: Any) -> Claim:
    """Claims the key in its own committed transaction, so concurrent requests see each other."""
    if not key:
        raise MissingIdempotencyKey()
    if len(key) > 200:
        raise MissingIdempotencyKey("Idempotency-Key must be at most 200 characters")
    digest = request_hash(body)
    now = utcnow()
    record = IdempotencyRecord(
        scope=scope,
        key=key,
        request_hash=digest,
        state=IdempotencyState.in_progress,
        created_at=now,
        lease_until=now + LEASE,
    )
    session.add(record)
    try:
        session.commit()
        return Claim(record, replay=False, resumed=False)
    except IntegrityError:
        session.rollback()
    existing = session.exec(
        select(IdempotencyRecord)
        .where(col(IdempotencyRecord.scope) == scope, col(IdempotencyRecord.key) == key)
        .with_for_update()
    ).one()
    if existing.request_hash != digest:
        session.rollback()
        raise IdempotencyKeyReused()
    if existing.state == IdempotencyState.done:
        session.rollback()
        return Claim(existing, replay=True, resumed=False)
    lease = (
        existing.lease_until
        if existing.lease_until.tzinfo
        else existing.lease_until.replace(tzinfo=now.tzinfo)
    )
    if lease > now:
        session.rollback()
        raise RequestInProgress()
    existing.lease_until = now + LEASE
    session.add(existing)
    session.commit()
    return Claim(existing, replay=False, resumed=True)


def attach(session: Session, record: IdempotencyRecord, resource: str) -> None:
    """Names what this request started, in the same transaction that starts it."""
    record.resource = resource
    session.add(record)


def finish(session: Session, record: IdempotencyRecord, status: int, body: dict[str, Any]) -> None:
    record.state = IdempotencyState.done
    record.response_status = status
    record.response_body = body
    session.add(record)
    session.commit()


def release(session: Session, record: IdempotencyRecord) -> None:
    """The request failed: rolls back what it had not committed and frees the key at once.

    If nothing was started (no resource attached, and committed, with the key) the key is forgotten, so a
    corrected retry may use it. If something was, the record stays and its lease ends now: a retry with
    the same key resumes what was started instead of waiting out the lease with 409."""
    session.rollback()
    fresh = session.get(IdempotencyRecord, record.id)
    if fresh is None or fresh.state == IdempotencyState.done:
        session.rollback()
        return
    if fresh.resource is None:
        session.delete(fresh)
    else:
        fresh.lease_until = utcnow()
        session.add(fresh)
    session.commit()


def create_once(
    session: Session,
    scope: str,
    key: str | None,
    body: Any,
    *,
    kind: str,
    load: Callable[[str], T | None],
    make: Callable[[], T],
    ident: Callable[[T], str],
    render: Callable[[T], dict[str, Any]],
) -> tuple[int, dict[str, Any]]:
    """A create route under an Idempotency-Key: replays, resumes an interrupted attempt, or creates.

    `make()` raising anything (an AppError, or an unexpected error that becomes a 500) changes nothing
    and frees the key at once for a retry."""
    claimed = claim(session, scope, key, body)
    if claimed.replay:
        return claimed.record.response_status or 201, claimed.record.response_body or {}
    if claimed.resumed and claimed.record.resource:
        existing = load(claimed.record.resource.split(":", 1)[1])
        if existing is not None:
            answer = render(existing)
            finish(session, claimed.record, 201, answer)
            return 201, answer
    try:
        created = make()
        attach(session, claimed.record, f"{kind}:{ident(created)}")
        answer = render(created)  # the record's resource and answer are written in one UPDATE
        finish(session, claimed.record, 201, answer)  # commits the new row together with its answer
    except Exception:
        release(session, claimed.record)
        raise
    return 201, answer
