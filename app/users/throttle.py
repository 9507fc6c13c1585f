"""Wrong-password throttling that cannot be turned against the rightful owner.

Two counters, both reserved (one conditional UPDATE, committed) before Argon2 runs, so parallel guesses
cannot outrun them:
- per account and client (`pair:`): after `login_backoff_after` wrong passwords in a row, each further
  attempt from that client waits 1 s, 2 s, 4 s ... up to `login_backoff_max_seconds`. An attacker's failures
  from one address never stop the owner logging in from another. A right password ends the run; so do
  `login_window_minutes` without an attempt.
- per client (`client:`): at most `login_client_max_failures` wrong passwords over all accounts in a window
  of `login_window_minutes`, against one address trying many accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, literal, or_, select, update
from sqlmodel import Session, col

from app.core.config import Settings
from app.core.errors import TooManyRequests
from app.core.security import utcnow
from app.users.models import LoginThrottle
from common.dbtypes import UTCDateTime
from common.sql import insert_ignore

T = LoginThrottle


@dataclass(frozen=True)
class Attempt:
    pair: str
    client: str


def backoff(settings: Settings, failures: int) -> timedelta:
    """The wait after the n-th wrong password in a row (none for the first `login_backoff_after`)."""
    over = failures - settings.login_backoff_after
    if over <= 0:
        return timedelta(0)
    return timedelta(seconds=min(2 ** min(over - 1, 30), settings.login_backoff_max_seconds))


def _wait(until: datetime | None, now: datetime) -> int:
    return max(int((until - now).total_seconds()) + 1, 1) if until is not None else 1


def _ensure_row(session: Session, key: str, now: datetime) -> None:
    row = {"key": key, "failures": 0, "window_start": now, "locked_until": None}
    insert_ignore(session, T.__table__, [row])  # type: ignore[attr-defined]


def _reserve_client(session: Session, settings: Settings, key: str, now: datetime) -> None:
    window_start = now - timedelta(minutes=settings.login_window_minutes)
    expired = col(T.window_start) < window_start
    _ensure_row(session, key, now)
    reserved = session.execute(
        update(T)
        .where(col(T.key) == key, or_(expired, col(T.failures) < settings.login_client_max_failures))
        .values(
            failures=case((expired, 1), else_=col(T.failures) + 1),
            window_start=case((expired, literal(now, UTCDateTime())), else_=col(T.window_start)),
        )
        .returning(col(T.failures))
    ).first()
    session.commit()
    if reserved is None:
        start = session.execute(select(col(T.window_start)).where(col(T.key) == key)).scalar_one()
        session.commit()
        wait = _wait(start + timedelta(minutes=settings.login_window_minutes), now)
        raise TooManyRequests(
            f"too many failed logins from your address; try again in {wait} s", retry_after=wait
        )


def _reserve_pair(session: Session, settings: Settings, key: str, now: datetime) -> bool:
    """False when the back-off of this account and client has not passed yet."""
    forgotten = col(T.window_start) < now - timedelta(minutes=settings.login_window_minutes)
    _ensure_row(session, key, now)
    reserved = session.execute(
        update(T)
        .where(col(T.key) == key, or_(col(T.locked_until).is_(None), col(T.locked_until) <= now))
        .values(failures=case((forgotten, 1), else_=col(T.failures) + 1), window_start=now)
        .returning(col(T.failures))
    ).first()
    if reserved is not None:
        # Counted as a failure, with its back-off, until the password proves right: set in the same
        # transaction, so a parallel attempt waits for the row and then sees the back-off.
        delay = backoff(settings, reserved[0])
        if delay:
            session.execute(update(T).where(col(T.key) == key).values(locked_until=now + delay))
    session.commit()
    return reserved is not None


def reserve(session: Session, settings: Settings, email: str, client: str) -> Attempt:
    """Counts one attempt as failed before the password is checked; `succeeded` takes it back.
    Commits the session (an attempt counts even though the request fails)."""
    now = utcnow()
    attempt = Attempt(pair=f"pair:{client}|{email}", client=f"client:{client}")
    _reserve_client(session, settings, attempt.client, now)
    if not _reserve_pair(session, settings, attempt.pair, now):
        _release_client(session, attempt)
        until = session.execute(select(col(T.locked_until)).where(col(T.key) == attempt.pair)).scalar_one()
        session.commit()
        wait = _wait(until, now)
        raise TooManyRequests(
            f"too many failed logins for this account; try again in {wait} s", retry_after=wait
        )
    return attempt


def _release_client(session: Session, attempt: Attempt) -> None:
    session.execute(
        update(T)
        .where(col(T.key) == attempt.client, col(T.failures) > 0)
        .values(failures=col(T.failures) - 1)
    )
    session.commit()


def succeeded(session: Session, attempt: Attempt) -> None:
    """The password was right: the run of failures of this account and client ends."""
    session.execute(update(T).where(col(T.key) == attempt.pair).values(failures=0, locked_until=None))
    _release_client(session, attempt)
