"""The data folder is its owner's only: database files and local secrets 0600, the folder 0700, and
`essx run` prints no sample password."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import text
from sqlmodel import Session, select
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import Settings, get_settings
from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.security import verify_secret
from app.runner import banner
from app.users.models import Role, User


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual umask 022 (files 0644, folders 0755), whatever the test runner's is."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_sqlite_database_and_its_wal_and_shm_files_are_0600(tmp_path: Path, loose_umask: None) -> None:
    db = tmp_path / "essx.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        with Session(engine) as s:
            s.exec(text("CREATE TABLE t (x INTEGER)"))  # type: ignore[call-overload]
            s.exec(text("INSERT INTO t VALUES (1)"))  # type: ignore[call-overload]
            s.commit()
            files = [db, db.with_name("essx.db-wal"), db.with_name("essx.db-shm")]
            assert all(f.exists() for f in files)  # WAL mode: all three exist while a connection is open
            assert [oct(mode(f)) for f in files] == [oct(0o600)] * 3
    finally:
        engine.dispose()


def test_an_older_world_readable_database_is_made_private(tmp_path: Path, loose_umask: None) -> None:
    db = tmp_path / "essx.db"
    db.touch(0o644)
    db.with_name("essx.db-wal").touch(0o644)
    make_engine(f"sqlite:///{db}").dispose()
    assert mode(db) == mode(db.with_name("essx.db-wal")) == 0o600


def test_migrating_a_new_database_creates_it_0600(tmp_path: Path, loose_umask: None) -> None:
    db = tmp_path / "fresh" / "essx.db"
    upgrade(f"sqlite:///{db}")
    assert mode(db) == 0o600


def test_local_secrets_are_0600_in_a_0700_folder(tmp_path: Path, loose_umask: None) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.secret("jwt_secret")
    secrets_file = tmp_path / "data" / "local-secrets.json"
    assert mode(secrets_file) == 0o600 and mode(tmp_path / "data") == 0o700
    # rotate-master-key writes the file again: still private, also when it has to create it
    secrets_file.chmod(0o644)
    settings.store_local_secret("wallet_master_key", "00" * 32)
    assert mode(secrets_file) == 0o600
    secrets_file.unlink()
    settings.store_local_secret("wallet_master_key", "00" * 32)
    assert mode(secrets_file) == 0o600


def _secrets_of_a_new_process(data_dir: Path, start: Any, out: Any) -> None:
    start.wait()
    settings = Settings(data_dir=data_dir)  # each worker process builds its own settings
    out.put((settings.secret("jwt_secret"), settings.secret("wallet_master_key")))


def test_processes_starting_together_agree_on_the_local_secrets(tmp_path: Path) -> None:
    """`essx run --workers N` starts N processes at once; each must read the same secrets (a JWT signed by
    one worker is checked by another) and none may read a half-written file."""
    context = multiprocessing.get_context("fork")
    start, out = context.Barrier(8), context.Queue()
    workers = [
        context.Process(target=_secrets_of_a_new_process, args=(tmp_path / "data", start, out))
        for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    seen = {out.get(timeout=30) for _ in workers}
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert len(seen) == 1
    stored = json.loads((tmp_path / "data" / "local-secrets.json").read_text())
    assert seen == {(stored["jwt_secret"], stored["wallet_master_key"])}


def test_essx_run_makes_its_data_folder_private(tmp_path: Path, loose_umask: None) -> None:
    from app.core.db import private_dir

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    private_dir(data)  # what run_service does first
    assert mode(data) == 0o700


def test_the_banner_shows_no_password_and_create_admin_asks_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path)
    lines = "\n".join(banner(settings, has_admin=False))
    assert "essx create-admin --email admin@example.com" in lines
    assert "--password" not in lines and "a-long-password" not in lines
    Console(quiet=True).print(lines)  # rich markup stays valid

    monkeypatch.setenv("ESSX_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        upgrade(get_settings().sqlalchemy_url)
        runner = CliRunner()
        typo = runner.invoke(
            cli, ["create-admin", "--email", "a@example.com"], input="a-long-password\nanother-one\n" * 3
        )
        assert typo.exit_code != 0  # the confirmation differs every time
        done = runner.invoke(
            cli, ["create-admin", "--email", "a@example.com"], input="a-long-password\na-long-password\n"
        )
        assert done.exit_code == 0, done.output
        assert "a-long-password" not in done.output  # hidden input
        engine = make_engine(get_settings().sqlalchemy_url)
        with Session(engine) as s:
            admin = s.exec(select(User).where(User.email == "a@example.com")).one()
        engine.dispose()
        assert admin.role == Role.admin and verify_secret(admin.password_hash, "a-long-password")
    finally:
        get_settings.cache_clear()
