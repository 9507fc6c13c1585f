"""Small dialect-aware SQL helpers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

# The largest value of an INTEGER (32-bit) column on PostgreSQL: ids beyond it cannot exist.
MAX_INT_ID = 2**31 - 1


def lock_rows(session: Session, table: Any, *where: Any) -> None:
    """Holds the locks of the rows matching `where` until the session's transaction ends, so transactions
    that take them run one after another, and each one's later reads see what the previous one committed.

    PostgreSQL: SELECT ... ORDER BY key FOR UPDATE (in key order, so two takers cannot deadlock). SQLite
    ignores FOR UPDATE, and a deferred transaction reads without locking anything, so there a no-op write
    to the rows takes the database's write lock instead (waiting up to the busy timeout for another
    writer); it is held until commit or rollback."""
    key = next(iter(table.primary_key.columns))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(key).where(*where).order_by(key).with_for_update())
    else:
        session.execute(update(table).where(*where).values({key.name: key}))
