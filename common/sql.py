"""Dialect-aware SQL that every layer writes the same way (PostgreSQL in production, SQLite in tests)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session


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
