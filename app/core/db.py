"""Engine and sessions. The schema comes from Alembic migrations; create_all is for tests of pure logic only."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from common.dbtypes import BigAmount

__all__ = ["BigAmount", "make_engine", "private_dir", "secure_sqlite_files", "session_scope", "write_private"]

# The data folder holds the database, the local secrets and the chain state: only its owner may read it.
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def private_dir(path: Path) -> Path:
    """The folder, created if missing, readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file that only its owner may read, from the moment it exists (no chmod afterwards)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)  # a file that already existed keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)


def secure_sqlite_files(url: str) -> None:
    """Make a SQLite database file 0600 before anything opens it; its -wal, -shm and -journal files
    (SQLite creates them with the database file's mode) too, if they exist already."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))  # an empty file is an empty database
    for suffix in ("", "-wal", "-shm", "-journal"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.chmod(PRIVATE_FILE)


# Statements before which Python's sqlite3 begins a transaction (and SQLite takes its write lock).
_WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
GATE_TIMEOUT = 30.0  # as the busy timeout: past it the writer goes on, and SQLite's own wait decides


class _GatedConnection(sqlite3.Connection):
    """A SQLite connection whose writers queue on one lock of their process (the engine's write gate).

    SQLite lets one writer at a time; the others poll (the busy handler sleeps up to 100 ms between
    tries), so under many short writers a waiting one loses the race again and again: the batcher and
    the relayer waited up to 2-4 s for the write lock behind 50 users' requests, the tail of a transfer's
    latency. Waiting on a lock instead, a writer gets the database as soon as the previous one commits.
    Taken before the first write of a transaction (`take_gate`), given back when it ends."""

    gate: threading.Lock | None = None
    holds_gate = False

    def take_gate(self) -> None:
        if self.gate is not None and not self.holds_gate:
            self.holds_gate = self.gate.acquire(timeout=GATE_TIMEOUT)

    def drop_gate(self) -> None:
        if self.holds_gate and self.gate is not None:
            self.holds_gate = False
            self.gate.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.drop_gate()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.drop_gate()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.drop_gate()

    def __del__(self) -> None:  # a connection dropped without close(): its writer gives the gate back
        self.drop_gate()


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        secure_sqlite_files(url)
        gate = threading.Lock()
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30, "factory": _GatedConnection},
            pool_size=50,
            max_overflow=20,
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            if isinstance(dbapi_conn, _GatedConnection):
                dbapi_conn.gate = gate

        @event.listens_for(engine, "before_cursor_execute")
        def _before_write(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
            if _WRITES.match(statement):
                cursor.connection.take_gate()

        @event.listens_for(engine, "after_cursor_execute")
        def _after_write(_conn: Any, cursor: Any, *_args: Any) -> None:
            raw = cursor.connection
            if raw.holds_gate and not raw.in_transaction:  # ended without commit(): a statement did it
                raw.drop_gate()

        return engine
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True, **kwargs)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: commits once at the end, rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
