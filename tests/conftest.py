"""Shared fixtures: one real anvil node per test session (automine), snapshot/revert per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from wallet.localchain import ANVIL_DEV_KEYS, AnvilNode, environment_chain_url, free_port


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    url = environment_chain_url()
    if url:
        yield url
        return
    node = AnvilNode(port=free_port(), block_time=None).start()
    try:
        yield node.url
    finally:
        node.stop()


@pytest.fixture(scope="session")
def w3(anvil_url: str) -> Web3:
    return Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 30}))


@pytest.fixture(scope="session")
def dev_accounts() -> list[LocalAccount]:
    """anvil's funded development accounts: [0] deploys and administers, the others are users."""
    return [Account.from_key(k) for k in ANVIL_DEV_KEYS]


@pytest.fixture
def chain_snapshot(w3: Web3) -> Iterator[None]:
    """Run a test on a chain that is rewound afterwards, so tests never see each other's state."""
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield
    finally:
        w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]


# --- the service on a real database and the real chain ---------------------------------------------

import os  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import psycopg  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import delete  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from app.context import Context, build_context  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.core.db import make_engine  # noqa: E402
from app.core.migrate import upgrade  # noqa: E402
from app.main import create_app  # noqa: E402
from contracts.deploy import Deployment, deploy  # noqa: E402

PG_ADMIN_URL = os.environ.get("ESSX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def deployments_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deployments")


@pytest.fixture(scope="session")
def deployment(w3: Web3, dev_accounts: list[LocalAccount], deployments_dir: Path) -> Deployment:
    return deploy(
        w3,
        dev_accounts[0],
        network="local",
        directory=deployments_dir,
        token_name="Energy Coin",
        token_symbol="ENC",
    )


def _pg_database() -> Iterator[str]:
    """A throw-away PostgreSQL database for this test run, dropped at the end."""
    name = f"essx_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every database test runs on SQLite and on PostgreSQL; the schema comes from the migrations."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'essx.db'}"
        upgrade(url)
        yield url
        return
    gen = _pg_database()
    url = next(gen)
    upgrade(url)
    yield url
    gen.close()


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def clean_db(engine: Engine) -> Iterator[Engine]:
    """Each test starts from empty tables (the schema stays)."""
    yield engine
    with engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            if table.name != "alembic_version":
                conn.execute(delete(table))


@pytest.fixture
def settings(tmp_path: Path, anvil_url: str, deployments_dir: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=db_url,
        chain="local",
        rpc_urls=[anvil_url],
        deployments_dir=deployments_dir,
        jwt_secret="test-jwt-secret-0123456789abcdef0123456789",  # type: ignore[arg-type]
        wallet_master_key="11" * 32,  # type: ignore[arg-type]
        tx_timeout_seconds=20,
    )


@pytest.fixture
def ctx(
    settings: Settings, clean_db: Engine, deployment: Deployment, chain_snapshot: None
) -> Iterator[Context]:
    context = build_context(settings, engine=clean_db)
    yield context
    context.relayer.stop()


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx=ctx)) as c:
        yield c
