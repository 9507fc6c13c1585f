"""A database lease, so a schedule runs in one process at a time however many are started.

Used by the collector's schedule and by the API's background workers (relayer, batcher, indexer,
market: ``app/main.py``); ``common/worker.py``'s ``LeaseKeeper`` renews a lease from a thread and says when
it is won or lost.

One row per schedule in ``job_leases``. Taking it is a single conditional UPDATE (``holder = me OR
expired``), atomic on SQLite (one writer) and PostgreSQL (row lock), so two processes can never both win.
The holder renews it inside each unit of work that writes (``fence``): if the lease was lost meanwhile
(a long pause, a network partition) that transaction fails instead of writing beside the new holder.
Works the same on both databases, which is why this is not a PostgreSQL advisory lock.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, String, Table, bindparam, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel

from common.dbtypes import utc_column

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
log = logging.getLogger(__name__)


class JobLease(SQLModel, table=True):
    """Who runs a schedule: the holder renews before ``expires_at``; anyone may take an expired lease."""

    __tablename__ = "job_leases"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    holder: str = Field(max_length=120)
    expires_at: datetime = Field(sa_column=utc_column(nullable=False))
    acquired_at: datetime = Field(sa_column=utc_column(nullable=False))


_LEASES: Table = JobLease.__table__  # type: ignore[attr-defined]
_FENCE = (
    update(_LEASES)
    .where(
        _LEASES.c.name == bindparam("lease"),
        _LEASES.c.holder == bindparam("me"),
        _LEASES.c.expires_at >= bindparam("now"),
    )
    .values(expires_at=bindparam("until"))
)


class LeaseLost(RuntimeError):
    """Another process holds the lease now: this one must stop writing."""


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Lease:
    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        holder: str | None = None,
        ttl_s: float = 15.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.engine, self.name = engine, name
        self.holder = holder or default_holder()
        self.ttl = timedelta(seconds=ttl_s)
        self.clock = clock
        self._until: datetime | None = None

    @property
    def held(self) -> bool:
        """This process's view: true while the last successful renewal has not expired."""
        return self._until is not None and self._until > self.clock()

    def try_acquire(self) -> bool:
        """Take or renew the lease; True when this process holds it afterwards."""
        now = self.clock()
        with self.engine.begin() as conn:
            self._ensure_row(conn)
            held = self._claim(conn, now)
        self._until = now + self.ttl if held else None
        return held

    def _ensure_row(self, conn: Connection) -> None:
        exists = conn.execute(
            JobLease.__table__.select().where(JobLease.__table__.c.name == self.name)  # type: ignore[attr-defined]
        ).first()
        if exists is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        JobLease.__table__.insert().values(  # type: ignore[attr-defined]
                            name=self.name, holder="", expires_at=EPOCH, acquired_at=EPOCH
                        )
                    )
            except IntegrityError:
                pass  # another process created it first: fine, the UPDATE decides

    def _claim(self, conn: Connection, now: datetime) -> bool:
        t = JobLease.__table__  # type: ignore[attr-defined]
        mine = t.c.holder == self.holder
        result = conn.execute(
            update(t)
            .where(t.c.name == self.name, mine | (t.c.expires_at < now))
            .values(holder=self.holder, expires_at=now + self.ttl)
        )
        if result.rowcount != 1:
            return False
        if self._until is None:  # a new holding starts now (kept when merely renewing)
            conn.execute(update(t).where(t.c.name == self.name).values(acquired_at=now))
        return True

    def fence(self, session: Session) -> None:
        """Renew inside the caller's transaction; raise LeaseLost (the caller rolls back) if not held."""
        now = self.clock()
        # A Core statement built once (the ORM's bulk UPDATE, its session synchronisation, cost more):
        # the same conditional UPDATE, in the caller's transaction, with its row lock until the commit.
        result = session.execute(
            _FENCE, {"lease": self.name, "me": self.holder, "now": now, "until": now + self.ttl}
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            self._until = None
            raise LeaseLost(f"lease {self.name!r} is no longer held by {self.holder}")
        self._until = now + self.ttl

    def release(self) -> None:
        """Give the lease up at a clean stop, so a standby takes over at once instead of after the TTL."""
        if self._until is None:
            return
        with self.engine.begin() as conn:
            t = JobLease.__table__  # type: ignore[attr-defined]
            conn.execute(
                update(t).where(t.c.name == self.name, t.c.holder == self.holder).values(expires_at=EPOCH)
            )
        self._until = None

    def current_holder(self) -> tuple[str, datetime] | None:
        with Session(self.engine) as session:
            row = session.get(JobLease, self.name)
            return (row.holder, row.expires_at) if row and row.expires_at > self.clock() else None
