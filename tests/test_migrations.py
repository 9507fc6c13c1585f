"""The schema comes only from the migrations: they build what the models describe, and the newest one
keeps existing rows and goes down and up again. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import app.tables  # noqa: F401  (registers every table)
from app.core.db import make_engine
from app.core.migrate import alembic_config, upgrade
from tests.conftest import _pg_database


def test_migrations_build_what_the_models_describe(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def scratch_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    databases = _pg_database()
    yield next(databases)
    databases.close()


def test_auth_hardening_migration_keeps_rows_and_goes_down_and_up(scratch_url: str) -> None:
    upgrade(scratch_url, "0004")
    engine = make_engine(scratch_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (email, password_hash, display_name, role, status, created_at) "
                    "VALUES ('a@example.com', 'h', 'A', 'consumer', 'approved', '2026-01-01 00:00:00+00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO user_totp (user_id, sealed_secret, enabled, last_counter, created_at) "
                    "SELECT id, 's', false, -1, '2026-01-01 00:00:00+00' FROM users"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO login_throttle (key, failures, window_start) "
                    "VALUES ('email:a@example.com', 5, '2026-01-01 00:00:00+00')"
                )
            )
        upgrade(scratch_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT session_epoch FROM users")).scalar_one() == 0
            assert conn.execute(text("SELECT failures, locked_until FROM user_totp")).one() == (0, None)
            assert conn.execute(text("SELECT count(*) FROM login_throttle")).scalar_one() == 0
            assert conn.execute(text("SELECT count(*) FROM revoked_token_families")).scalar_one() == 0
        command.downgrade(alembic_config(scratch_url), "0004")
        upgrade(scratch_url)
    finally:
        engine.dispose()
