"""The `essx` command: run the service, migrate, deploy, create the first admin, reindex."""

from __future__ import annotations

import getpass
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlmodel import Session, select

from app.audit.service import verify
from app.collector_cli import register_commands
from app.context import build_context
from app.core.config import Settings, get_settings
from app.core.db import make_engine
from app.core.errors import Conflict
from app.core.logging import configure_logging
from app.core.migrate import upgrade
from app.demo.cli import register_commands as register_demo
from app.indexer.service import reindex as do_reindex
from app.runner import run_service
from app.users.models import Role, User, UserStatus
from app.users.service import create_user
from app.wallets.service import rotate_master_key as rotate
from wallet.chain import check_chain_id, connect
from wallet.envelope import MasterKey
from wallet.service_key import service_account, write_keystore

cli = typer.Typer(help="ESSX: community energy exchange on Kaia", no_args_is_help=True)
app = cli  # the console-script entry point
register_commands(cli)  # ESS collector: simulate, sim-fault, collector
register_demo(cli)  # essx demo: a simulated community day
console = Console()
log = logging.getLogger("essx")


def _settings(network: str | None = None) -> Settings:
    if network:
        return Settings(chain=network)  # type: ignore[arg-type]
    return get_settings()


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date."""

    settings = get_settings()
    upgrade(settings.sqlalchemy_url)
    console.print(f"[green]database migrated[/] ({_safe_url(settings.sqlalchemy_url)})")


@cli.command()
def deploy(
    network: Annotated[str, typer.Option(help="local, kairos, mainnet or custom")] = "local",
    force: Annotated[bool, typer.Option(help="deploy again although a deployment exists")] = False,
) -> None:
    """Deploy the contracts and write deployments/<chain_id>.json."""
    from contracts.deploy import AlreadyDeployed, MarketParams
    from contracts.deploy import deploy as do_deploy

    settings = _settings(network)
    w3 = connect(settings.chain_urls)
    check_chain_id(w3, settings.expected_chain_id)
    account = _service_account(settings)
    try:
        d = do_deploy(
            w3,
            account,
            network=settings.chain,
            directory=settings.deployment_dir,
            token_name=settings.token_name,
            token_symbol=settings.token_symbol,
            force=force,
            market=MarketParams(settings.market_refund_timeout_seconds, settings.settlement_penalty_bps),
        )
    except AlreadyDeployed as exc:
        console.print(f"[yellow]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"[green]deployed on chain {d.chain_id}[/]: {d.contracts}")


def _service_account(settings: Settings):  # type: ignore[no-untyped-def]

    password = (
        settings.service_keystore_password.get_secret_value() if settings.service_keystore_password else None
    )
    return service_account(
        is_local=settings.is_local,
        keystore=settings.service_keystore,
        password=password,
        password_file=settings.service_keystore_password_file,
    )


@cli.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="the admin's e-mail (login name)")],
    password: Annotated[
        str | None, typer.Option(help="omit to be asked (keeps it out of the shell history)")
    ] = None,
    display_name: Annotated[str, typer.Option()] = "Administrator",
) -> None:
    """Create an admin account (the first one, or another)."""

    settings = get_settings()
    if password is None:  # asked, so it stays out of the shell history and the process list
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        console.print("[red]the password needs at least 8 characters[/]")
        raise typer.Exit(2)
    engine = make_engine(settings.sqlalchemy_url)
    with Session(engine) as session:
        try:
            user = create_user(session, email, password, display_name, Role.admin)
        except Conflict as exc:
            console.print(f"[red]{exc.detail}[/]")
            raise typer.Exit(1) from None
        user.status = UserStatus.approved
        session.add(user)
        session.commit()
        console.print(f"[green]admin {user.email} created[/] (id {user.id})")


@cli.command()
def reindex() -> None:
    """Drop the indexed Transfer events and rebuild them from the chain."""

    ctx = build_context(get_settings())
    count = do_reindex(ctx)
    console.print(f"[green]reindexed[/]: {count} Transfer events")


@cli.command("audit-verify")
def audit_verify() -> None:
    """Check that the audit log's hash chain is intact."""

    with Session(make_engine(get_settings().sqlalchemy_url)) as session:
        ok, broken = verify(session)
    if ok:
        console.print("[green]audit log intact[/]")
    else:
        console.print(f"[red]audit log broken at entry {broken}[/]")
        raise typer.Exit(1)


@cli.command("new-keystore")
def new_keystore(path: Annotated[Path, typer.Argument(help="where to write the encrypted keystore")]) -> None:
    """Create a fresh service account in an encrypted (v3, scrypt) keystore file."""
    from eth_account import Account

    password = getpass.getpass("keystore password: ")
    if password != getpass.getpass("again: ") or len(password) < 12:
        console.print("[red]passwords differ or are shorter than 12 characters[/]")
        raise typer.Exit(2)
    account = Account.create()
    write_keystore(path, account, password)
    console.print(
        f"[green]keystore written[/] to {path}; address {account.address} (fund it with KAIA for gas)"
    )


@cli.command()
def run() -> None:
    """Run everything for development: migrate, local chain, deploy on first start, API."""

    settings = get_settings()
    configure_logging(settings.log_json)
    run_service(settings, console)


def _safe_url(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _admin_exists(session: Session) -> bool:

    return session.exec(select(User).where(User.role == Role.admin)).first() is not None


@cli.command("rotate-master-key")
def rotate_master_key(
    new_key: Annotated[
        str | None, typer.Option(help="the new master key (hex or base64, 32 bytes); omit to be asked")
    ] = None,
) -> None:
    """Re-wrap every wallet data key under a new master key. Then set ESSX_WALLET_MASTER_KEY to it."""

    settings = get_settings()
    old = MasterKey.from_setting(settings.secret("wallet_master_key"))
    if new_key is None:
        new_key = getpass.getpass("new master key (empty: generate one): ") or MasterKey.generate_setting()
        console.print(f"new master key (store it safely, then set ESSX_WALLET_MASTER_KEY): {new_key}")
    new = MasterKey.from_setting(new_key)
    with Session(make_engine(settings.sqlalchemy_url)) as session:
        count = rotate(session, old, new)
        session.commit()
    if settings.is_local and settings.wallet_master_key.get_secret_value() in ("", "change-me"):
        settings.store_local_secret("wallet_master_key", new_key)
    console.print(f"[green]re-wrapped {count} secrets[/] under master key {new.key_id}")
