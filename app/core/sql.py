"""Small dialect-aware SQL helpers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

# The largest value of an INTEGER (32-bit) column on PostgreSQL: ids beyond it cannot exist.
MAX_INT_ID = 2**31 - 1


def insert_ignore(session: Session, table: Any, rows: list[dict[str, Any]]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING; returns how many rows were new."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    key = next(iter(table.primary_key.columns))
    # RETURNING counts the rows really inserted (rowcount is -1 for this statement on psycopg).
    stmt = module.insert(table).values(rows).on_conflict_do_nothing().returning(key)
    return len(session.execute(stmt).all())


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
