"""Shared fixtures: one real anvil node per test process (automine), snapshot/revert per test; the service
on a real database (SQLite and PostgreSQL, migrated once per process, emptied after each test).

Under pytest-xdist (`make test-fast`) every worker is its own test process: its own anvil, its own
SQLite file and its own throw-away PostgreSQL database."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import hypothesis
import psycopg
import pytest
from argon2 import PasswordHasher
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from web3 import Web3

from app.context import Context, build_context
from app.core import security
from app.core.config import Settings
from app.core.db import make_engine, secure_sqlite_files
from app.core.migrate import upgrade
from app.main import create_app
from common import clock
from contracts.deploy import Deployment, deploy
from tests.service_process import ServiceProcess
from tests.service_setup import empty_tables, service_settings
from wallet.localchain import ANVIL_DEV_KEYS, AnvilNode, environment_chain_url, free_port

# CI (`.ci/run` sets HYPOTHESIS_PROFILE=ci) checks the same examples on every run, so a property fails there
# because of a change, not a lucky draw. Local runs keep exploring with random seeds (failures are replayed
# from .hypothesis/); pin what they find with @example, as tests/ess_collector/test_forecast.py does.
hypothesis.settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

PG_ADMIN_URL = os.environ.get("ESSX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


# Under xdist (`make test-fast`) these run first: each takes seconds of one worker, and started last it
# would keep that worker busy after the others have finished. They are the first tests the first worker
# is sent, the others start on the rest.
SLOW_FIRST = (
    "tests/contracts/test_sources_match_artefacts.py::",  # waits for the compiler (contracts/conftest.py)
    "tests/api/test_fuzz.py::",
    "tests/api/test_limits.py::test_importing_our_code_leaves_the_recursion_limit_alone",
    "tests/ess_collector/test_sunspec.py::test_struct_decoder_equals_the_reference",
    "tests/wallet/test_kaia_fee_delegation.py::test_web3py_ext_",  # one worker runs its probe subprocess
)


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by fixture
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slowest tests first under xdist (SLOW_FIRST); and a module that starts `essx run` must say so
    (`pytestmark = pytest.mark.process`), or `make test-fast` would run it and stop being fast;
    docs/testing.md."""
    if getattr(config, "workerinput", None) is not None:
        items.sort(  # stable: the rest keep their order
            key=lambda item: next(
                (i for i, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix)), len(SLOW_FIRST)
            )
        )
    unmarked = sorted(
        {
            item.module.__name__
            for item in items
            if isinstance(item, pytest.Function)
            and ServiceProcess in vars(item.module).values()
            and item.get_closest_marker("process") is None
        }
    )
    if unmarked:
        raise pytest.UsageError(f"these modules start `essx run` but are not marked process: {unmarked}")


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """Argon2id at its lowest cost inside the test process: hashing and checking stay real (same
    algorithm, same code paths, wrong passwords still fail), but hundreds of registrations and logins no
    longer spend most of the suite's CPU. Child `essx run` processes keep the production cost, and
    tests/core/test_security.py pins the production parameters."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        yield


@pytest.fixture(autouse=True)
def wall_energy_clock() -> Iterator[None]:
    """The energy clock is the process's (`common.clock`): a test that builds a context with another one
    (tests/api/test_trading.py starts energy time at 03:01 UTC) must not leave it to the tests after it,
    which would then read a clock that lags the wall clock from 03:01 UTC on (a reading received
    "before" it was asked for)."""
    yield
    if clock.current().simulated:
        clock.configure()


# --- the chain ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def anvil_url(request: pytest.FixtureRequest) -> Iterator[str]:
    url = environment_chain_url()
    if url:
        if getattr(request.config, "workerinput", None) is not None:
            pytest.fail(
                "ESSX_TEST_CHAIN_URL names one node, and parallel workers would revert each other's state: run without -n"
            )
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


# --- the database --------------------------------------------------------------------------------------------


def _pg_url(name: str) -> str:
    """The SQLAlchemy URL of database `name` on the tests' PostgreSQL server."""
    return PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


def _create_pg_database(conn: psycopg.Connection, name: str, template: str | None = None) -> None:
    """CREATE DATABASE, whose commits do not wait for the server to flush its log to disk
    (synchronous_commit off): a test database outlives no crash, and each commit is otherwise a disk
    flush the test waits for. What a transaction sees, and when, is unchanged."""
    conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')


def _pg_database(template: str | None = None) -> Iterator[str]:
    """A throw-away PostgreSQL database for this test process, dropped at the end; a copy of `template`
    when one is named."""
    name = f"essx_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        _create_pg_database(conn, name, template)
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Under xdist the first worker to need a database migrates a template (a SQLite file, a PostgreSQL database)
# in the run's shared temporary folder; the others copy it instead of running the migrations again. The
# controller drops the PostgreSQL template at the end (pytest_unconfigure).
TEMPLATE_NOTE = "essx-db-templates.json"


def _shared_run_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The folder this xdist run's workers share (each worker's basetemp is a folder in it); None alone."""
    if getattr(config, "workerinput", None) is None:
        return None
    return tmp_path_factory.getbasetemp().parent


def _templates(shared: Path) -> dict[str, str]:
    """The migrated templates of this run, made by whichever worker asks first (the others wait for it)."""
    note = shared / TEMPLATE_NOTE
    with open(shared / f"{TEMPLATE_NOTE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if note.exists():
            return json.loads(note.read_text())
        sqlite_file = shared / "template-essx.db"
        upgrade(f"sqlite:///{sqlite_file}")
        pg_name = f"essx_template_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            _create_pg_database(conn, pg_name)
        templates = {"sqlite": str(sqlite_file), "postgresql": pg_name}
        note.write_text(json.dumps(templates))  # before migrating: the controller drops it whatever happens
        upgrade(_pg_url(pg_name))
        (shared / f"{TEMPLATE_NOTE}.ready").touch()
        return templates


def _templates_ready(shared: Path) -> dict[str, str] | None:
    templates = _templates(shared)
    return templates if (shared / f"{TEMPLATE_NOTE}.ready").exists() else None


def pytest_unconfigure(config: pytest.Config) -> None:
    """The xdist controller drops the PostgreSQL template its workers made (`_templates`)."""
    factory = getattr(config, "_tmp_path_factory", None)
    if getattr(config, "workerinput", None) is not None or factory is None:
        return
    try:
        note = factory.getbasetemp() / TEMPLATE_NOTE
    except Exception:
        return
    if note.exists():
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                f'DROP DATABASE IF EXISTS "{json.loads(note.read_text())["postgresql"]}" WITH (FORCE)'
            )


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every database test runs on SQLite and on PostgreSQL; the schema comes from the migrations (run
    here, or under xdist copied from the run's migrated template)."""
    shared = _shared_run_dir(request.config, tmp_path_factory)
    templates = _templates_ready(shared) if shared is not None else None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'essx.db'}"
        if templates is None:
            upgrade(url)
        else:
            secure_sqlite_files(url)  # 0600 before anything is written to it
            with (
                closing(sqlite3.connect(templates["sqlite"])) as src,
                closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as dst,
            ):
                src.backup(dst)
        yield url
        return
    gen = _pg_database(templates["postgresql"] if templates else None)
    url = next(gen)
    if templates is None:
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
    empty_tables(engine)


# --- the service in this process ---------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, anvil_url: str, deployments_dir: Path, db_url: str) -> Settings:
    return service_settings(tmp_path, db_url, anvil_url, deployments_dir)


@pytest.fixture
def ctx(
    settings: Settings, clean_db: Engine, deployment: Deployment, chain_snapshot: None
) -> Iterator[Context]:
    context = build_context(settings, engine=clean_db)
    yield context
    context.relayer.stop()


@pytest.fixture
def manual_mining(ctx: Context) -> Iterator[None]:
    """Blocks only when the test mines one (`evm_mine`): relayed transactions stay pending meanwhile."""
    ctx.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        yield
    finally:
        ctx.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx=ctx)) as c:
        yield c
