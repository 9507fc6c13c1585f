"""Attempt limits on guessable secrets (PINs, one-time codes) that hold under parallel requests.

Reserve, then verify: one conditional UPDATE counts the attempt as failed before the secret is checked. It
is atomic on SQLite and PostgreSQL, so however many guesses run at once, at most `limit` of them are ever
checked per lock window. The attempt that reaches the limit starts the lock (and a new count) at once; a
right secret takes it back.

`reserve` commits the count in a short transaction of its own: a process that dies mid-check leaves the
attempt counted. `reserve_in` leaves it in the caller's transaction, which then holds the counter row's
lock (PostgreSQL) or the database's write lock (SQLite) until it ends, so parallel guesses still queue
behind it and see its count: the caller commits the count before it answers a wrong secret, and a
right one commits with the act it authorises (one commit fewer). A process that dies before that
commit has answered nothing, so the guess it leaves uncounted told nobody anything.

`settle_in` is the one-statement form for a secret whose check is as cheap as a statement (a keyed hash):
checked first, then counted (wrong) or reset (right) by one conditional UPDATE under the same condition.
More guesses may be checked than the limit, but only the statement decides what a guess is answered, so
at most `limit` of them learn anything per lock window; a locked row answers "locked" to a right one too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import Column, Select, Update, bindparam, case, null, or_, select, update
from sqlmodel import Session

from app.core.security import utcnow
from common.dbtypes import UTCDateTime


@dataclass(frozen=True)
class AttemptLimit:
    """A counter of wrong attempts per row of a table, given by its columns (Core columns: the statements
    below are plain Core, built once, with the row's key as a parameter)."""

    key: Column[Any]  # the column that names one counter's row
    failures: Column[Any]  # its counter column
    locked_until: Column[Any]  # its lock column
    limit: int
    lockout: timedelta

    @property
    def _unlocked(self) -> tuple[Any, ...]:
        """The row's counter may move: under the limit and not locked at `now` (`reserving`, `succeeding`)."""
        return (
            self.failures < self.limit,
            or_(self.locked_until.is_(None), self.locked_until <= bindparam("now")),
        )

    @cached_property
    def reserving(self) -> Update:
        reaching = self.failures + 1 >= self.limit
        return (
            update(self.key.table)
            .where(self.key == bindparam("key"), *self._unlocked)
            .values(
                {
                    self.failures: case((reaching, 0), else_=self.failures + 1),
                    self.locked_until: case(
                        (reaching, bindparam("until", type_=UTCDateTime())), else_=null()
                    ),
                }
            )
            .returning(self.failures, self.locked_until)
        )

    @cached_property
    def succeeding(self) -> Update:
        """`resetting` for a secret already proved right, only while the row is not locked: the count of a
        right secret checked before its statement, under the same condition as `reserving`."""
        return (
            update(self.key.table)
            .where(self.key == bindparam("key"), *self._unlocked)
            .values({self.failures: 0, self.locked_until: None})
            .returning(self.key)
        )

    @cached_property
    def resetting(self) -> Update:
        return (
            update(self.key.table)
            .where(self.key == bindparam("key"))
            .values({self.failures: 0, self.locked_until: None})
        )

    @cached_property
    def reading_lock(self) -> Select[Any]:
        return select(self.locked_until).where(self.key == bindparam("key"))


@dataclass(frozen=True)
class Attempt:
    number: int  # 1 .. limit within this window
    locks: bool  # the last one allowed: the lock already holds unless the secret proves right


def reserve(session: Session, lim: AttemptLimit, key: Any) -> Attempt | None:
    """Counts one failed attempt on row `key`, committed; None while locked (then nothing may be checked)."""
    attempt = reserve_in(session, lim, key)
    session.commit()
    return attempt


def reserve_in(session: Session, lim: AttemptLimit, key: Any) -> Attempt | None:
    """`reserve` in the caller's transaction: the caller commits it before answering a wrong secret, or
    with what a right one authorises; None while locked (then nothing may be checked).
    Until then this transaction holds the counter's row lock (PostgreSQL) or the write lock (SQLite):
    write nothing through another connection meanwhile."""
    now = utcnow()
    row = session.execute(lim.reserving, {"key": key, "now": now, "until": now + lim.lockout}).first()
    if row is None:
        return None
    locks = row[1] is not None
    return Attempt(number=lim.limit if locks else row[0], locks=locks)


def settle_in(session: Session, lim: AttemptLimit, key: Any, right: bool) -> Attempt | None:
    """One statement for a secret whose check is cheap and was made already (a keyed hash): a wrong one
    is reserved as `reserve_in` does, a right one starts the count over (`reset`), each only while the row is
    not locked, in the caller's transaction (which then holds the row's lock, as `reserve_in`'s does);
    None while locked, whatever the secret: then the check's result must be dropped unanswered.
    What the guess learns is decided by this statement alone, atomically, so parallel guesses still get
    at most `limit` answers per lock window. Only for checks as cheap as the statement: a slow one (Argon2)
    must come after `reserve_in`, or a locked row would still cost its work per guess."""
    if not right:
        return reserve_in(session, lim, key)
    if session.execute(lim.succeeding, {"key": key, "now": utcnow()}).first() is None:
        return None
    return Attempt(number=0, locks=False)


def succeeded(session: Session, lim: AttemptLimit, key: Any) -> None:
    """The secret was right: the count starts over and a lock this attempt started is lifted (committed)."""
    reset(session, lim, key)
    session.commit()


def reset(session: Session, lim: AttemptLimit, key: Any) -> None:
    """`succeeded` in the caller's transaction: the caller commits it, or, if that transaction rolls back,
    writes it again in one of its own (until then the attempt stays counted as failed: never uncounted)."""
    session.execute(lim.resetting, {"key": key})


def locked_until(session: Session, lim: AttemptLimit, key: Any) -> datetime | None:
    value: datetime | None = session.execute(lim.reading_lock, {"key": key}).scalar_one_or_none()
    session.commit()
    return value
