"""What the service fixtures share with tests that build their own context (tests/api/test_fuzz.py)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from app.core.config import Settings


def service_settings(data_dir: Path, db_url: str, chain_url: str, deployments_dir: Path) -> Settings:
    """The service on the test session's database and chain, with fixed secrets."""
    return Settings(
        data_dir=data_dir,
        database_url=db_url,
        chain="local",
        rpc_urls=[chain_url],
        deployments_dir=deployments_dir,
        jwt_secret="test-jwt-secret-0123456789abcdef0123456789",  # type: ignore[arg-type]
        wallet_master_key="11" * 32,  # type: ignore[arg-type]
        tx_timeout_seconds=20,
    )


def empty_tables(engine: Engine) -> None:
    """Deletes every row (the schema and its migration stamp stay), children before parents."""
    with engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            if table.name != "alembic_version":
                conn.execute(delete(table))
