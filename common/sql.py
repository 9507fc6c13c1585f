"""Dialect-aware SQL that every layer writes the same way (PostgreSQL in production, SQLite in tests)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

# insert_ignore's statement per (table, dialect): built once, its rows passed at execution, so SQLAlchemy
# compiles it once and then finds it in its cache (a statement holding the rows as VALUES was built, its
# cache key computed and, for each new number of rows, compiled again, on every call)
_INSERT_IGNORE: dict[tuple[Any, str], Any] = {}


def insert_ignore(session: Session, table: Any, rows: list[dict[str, Any]]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING; returns how many rows were new. Every row has the same keys."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    stmt = _INSERT_IGNORE.get((table, dialect))
    if stmt is None:
        module: Any = postgresql if dialect == "postgresql" else sqlite
        key = next(iter(table.primary_key.columns))
        # RETURNING counts the rows really inserted (rowcount is -1 for this statement on psycopg); with
        # several rows SQLAlchemy sends them as one INSERT of many VALUES ("insertmanyvalues").
        stmt = _INSERT_IGNORE[(table, dialect)] = module.insert(table).on_conflict_do_nothing().returning(key)
    return len(session.execute(stmt, rows if len(rows) > 1 else rows[0]).all())
