"""The SQLite write gate (app/core/db.py): writers of a process queue on one lock, held from a
transaction's first write to its end, whichever way it ends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.core.db import make_engine


def _engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO t (id, n) VALUES (1, 0)"))
    return engine


def _gate_free(raw) -> bool:  # type: ignore[no-untyped-def]
    if not raw.gate.acquire(blocking=False):
        return False
    raw.gate.release()
    return True


def test_held_from_first_write_to_commit_or_rollback(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        conn.execute(text("SELECT n FROM t"))
        assert not raw.holds_gate  # reads do not queue
        conn.execute(text("UPDATE t SET n = n + 1"))
        assert raw.holds_gate and not _gate_free(raw)
        conn.commit()
        assert not raw.holds_gate and _gate_free(raw)
        conn.execute(text("UPDATE t SET n = n + 1"))
        conn.rollback()
        assert not raw.holds_gate and _gate_free(raw)
        with pytest.raises(IntegrityError):
            conn.execute(text("INSERT INTO t (id, n) VALUES (1, 0)"))
        conn.rollback()
        assert not raw.holds_gate and _gate_free(raw)
        conn.execute(text("UPDATE t SET n = n + 1"))
    assert _gate_free(raw)  # returned to the pool unfinished: the pool's rollback gives it back
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalar_one() == 1
    engine.dispose()


def test_concurrent_writers_all_write(tmp_path: Path) -> None:
    engine = _engine(tmp_path)

    def writer() -> None:
        for _ in range(25):
            with engine.begin() as conn:
                n = conn.execute(text("UPDATE t SET n = n + 1 WHERE id = 1 RETURNING n")).scalar_one()
                conn.execute(text("INSERT INTO t (id, n) VALUES (:id, :n)"), {"id": 1000 + n, "n": n})

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t WHERE id = 1")).scalar_one() == 200
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 201
    engine.dispose()
