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
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Row, Table, bindparam, update
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


def _checked(key: str | None, body: Any) -> tuple[str, str]:
    """The key, refused if missing or too long, and the body's digest."""
    if not key:
        raise MissingIdempotencyKey()
    if len(key) > 200:
        raise MissingIdempotencyKey("Idempotency-Key must be at most 200 characters")
    return key, request_hash(body)


def claim(session: Session, scope: str, key: str | None, body: Any) -> Claim:
    """The key's record: its answer to replay, or an interrupted attempt's, taken over (committed), or, for
    a new key, a record that is not stored yet: `attach` adds it to the transaction that starts the work,
    so it is written with what it names, in one commit. If that commit loses to a concurrent request with
    the key (its unique constraint), `release` and then `lost_to` give that request's answer."""
    key, digest = _checked(key, body)
    now = utcnow()
    existing = None
    if _find(session, scope, key) is not None:  # a new key (the usual case) takes one Core read only
        existing = session.exec(
            select(IdempotencyRecord)
            .where(col(IdempotencyRecord.scope) == scope, col(IdempotencyRecord.key) == key)
            .with_for_update()
        ).first()
    if existing is None:
        record = IdempotencyRecord(
            scope=scope,
            key=key,
            request_hash=digest,
            state=IdempotencyState.in_progress,
            created_at=now,
            lease_until=now + LEASE,
        )
        return Claim(record, replay=False, resumed=False)
    if existing.request_hash != digest:
        session.rollback()
        raise IdempotencyKeyReused()
    if existing.state == IdempotencyState.done:
        session.rollback()
        return Claim(existing, replay=True, resumed=False)
    if not _stale(existing, now):
        session.rollback()
        raise RequestInProgress()
    existing.lease_until = now + LEASE
    session.add(existing)
    session.commit()
    return Claim(existing, replay=False, resumed=True)


def attach(session: Session, record: IdempotencyRecord, resource: str) -> None:
    """Names what this request started, in the same transaction that starts it. A new record is inserted
    at once by a Core statement (the ORM's flush of it at the commit cost more): a concurrent request that
    stored the key first makes this raise IntegrityError here, not at the commit."""
    record.resource = resource
    if record.id is not None:  # taken over from an interrupted attempt (claim): stored already
        session.add(record)
        return
    record.id = session.execute(INSERT_CLAIMED, record.model_dump(exclude={"id"})).scalar_one()


def finish(session: Session, record: IdempotencyRecord, status: int, body: dict[str, Any]) -> None:
    """Stores the answer to replay and commits (a Core UPDATE of the record by its id)."""
    record.state = IdempotencyState.done
    record.response_status = status
    record.response_body = body
    session.execute(
        FINISH_RECORD,
        {"record_id": record.id, "state": record.state, "response_status": status, "response_body": body},
    )
    session.commit()


def release(session: Session, record: IdempotencyRecord) -> None:
    """The request failed: rolls back what it had not committed and frees the key at once.

    If nothing was started (no resource attached, and committed, with the key) the key is forgotten, so a
    corrected retry may use it. If something was, the record stays and its lease ends now: a retry with
    the same key resumes what was started instead of waiting out the lease with 409."""
    session.rollback()
    if record.id is None:  # never stored: it went with the transaction that rolled back
        return
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


RECORDS: Table = IdempotencyRecord.__table__  # type: ignore[attr-defined]
# Built once: their cache keys are computed once (a create's hot path).
FIND = (
    RECORDS.select()
    .with_only_columns(
        RECORDS.c.id,
        RECORDS.c.request_hash,
        RECORDS.c.state,
        RECORDS.c.resource,
        RECORDS.c.response_status,
        RECORDS.c.response_body,
        RECORDS.c.lease_until,
    )
    .where(RECORDS.c.scope == bindparam("scope"), RECORDS.c.key == bindparam("key"))
)
INSERT_RECORD = RECORDS.insert()
INSERT_CLAIMED = INSERT_RECORD.returning(RECORDS.c.id)
FINISH_RECORD = update(RECORDS).where(RECORDS.c.id == bindparam("record_id"))


def _find(session: Session, scope: str, key: str) -> Row[Any] | None:
    return session.execute(FIND, {"scope": scope, "key": key}).first()


def _answer(session: Session, found: Row[Any], digest: str) -> tuple[int, dict[str, Any]]:
    """What a request with a key already recorded gets: the first answer again, or 422 or 409. Ends the
    session's transaction (it only read)."""
    session.rollback()
    if found.request_hash != digest:
        raise IdempotencyKeyReused()
    if found.state != IdempotencyState.done:
        raise RequestInProgress()
    return found.response_status or 201, found.response_body or {}


def _stale(found: Row[Any] | IdempotencyRecord, now: datetime) -> bool:
    """A record still in progress whose lease ran out: its process died (one written by `claim`, or by a
    `create_once` of a version that claimed in a transaction of its own)."""
    if found.state == IdempotencyState.done:
        return False
    lease: datetime = found.lease_until  # aware: the column is UTCDateTime, in a Core row too
    return lease <= now


def lost_to(session: Session, record: IdempotencyRecord) -> tuple[int, dict[str, Any]] | None:
    """After `release`: for a claimed record that was never stored, the answer of the concurrent request
    that took its key first (the first answer again, or 422 or 409), None if none did."""
    if record.id is not None:
        return None
    found = _find(session, record.scope, record.key)
    if found is None:
        session.rollback()
        return None
    return _answer(session, found, record.request_hash)


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
    """A create route under an Idempotency-Key: replays, or creates and records its answer, in one
    transaction: the key's record is inserted, done, in the transaction that creates the object, so a
    kill -9 leaves either both or neither. Of concurrent requests with one key, one commits; the others
    hit the key's unique constraint (or find it taken), roll back and answer like a later request would:
    the first answer again, 422 for another body, 409 while a record is still in progress.

    `make()` raising anything (an AppError, or an unexpected error that becomes a 500) changes nothing and
    leaves the key free for a retry, unless a concurrent request with the key won meanwhile: then its
    answer is given, as if this request had come second."""
    key, digest = _checked(key, body)
    now = utcnow()
    found = _find(session, scope, key)
    if found is not None and (found.request_hash != digest or not _stale(found, now)):
        return _answer(session, found, digest)
    try:
        created = None
        if found is not None and found.resource:  # an interrupted attempt had created it: answer with it
            created = load(found.resource.split(":", 1)[1])
        if created is None:
            created = make()
        answer = render(created)
        done = {
            "state": IdempotencyState.done,
            "resource": f"{kind}:{ident(created)}",
            "response_status": 201,
            "response_body": answer,
        }
        if found is None:
            session.execute(
                INSERT_RECORD,
                {
                    "scope": scope,
                    "key": key,
                    "request_hash": digest,
                    "created_at": now,
                    "lease_until": now + LEASE,
                    **done,
                },
            )
        else:  # takes the stale record over, if no concurrent request did first
            taken = session.execute(
                update(RECORDS)
                .where(
                    RECORDS.c.id == found.id,
                    RECORDS.c.state == IdempotencyState.in_progress,
                    RECORDS.c.lease_until <= now,
                )
                .values(done)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise RequestInProgress()
        session.commit()  # the new object together with its key and answer
    except Exception:
        session.rollback()
        winner = _find(session, scope, key)  # a concurrent request with this key that committed first
        if winner is None or (found is not None and winner.id == found.id and _stale(winner, now)):
            session.rollback()
            raise
        return _answer(session, winner, digest)
    return 201, answer
