"""`essx run`: everything a developer needs on embedded defaults, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from typing import Any

import uvicorn
from rich.console import Console
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from uvicorn.supervisors.multiprocess import Multiprocess

from app.core.config import Settings
from app.core.db import make_engine, private_dir
from app.core.migrate import upgrade
from app.main import create_app
from app.sites.demo import register_cluster, start_demo_cluster
from app.users.models import Role, User
from contracts.deploy import LATER_CONTRACTS, MarketParams, deploy, ensure_contracts, is_live, load_deployment
from ess_collector.simulator import ThreadedCluster
from wallet.chain import check_chain_id, connect
from wallet.localchain import AnvilNode, port_in_use, rpc_chain_id
from wallet.service_key import service_account

log = logging.getLogger("essx.run")


def start_local_chain(settings: Settings, console: Console) -> AnvilNode | None:
    """Starts anvil with its state in the data folder; reuses a node already serving that port."""
    port = settings.local_chain_port
    if port_in_use(port):
        running = rpc_chain_id(f"http://127.0.0.1:{port}")
        if running != settings.expected_chain_id:
            raise SystemExit(
                f"port {port} is taken by something that is not our local chain; set ESSX_LOCAL_CHAIN_PORT"
            )
        console.print(f"[yellow]reusing the chain already running on port {port}[/]")
        return None
    node = AnvilNode(
        port=port,
        chain_id=settings.expected_chain_id,
        block_time=settings.local_block_time or None,  # 0 = automine (one block per transaction)
        state_file=settings.chain_state_file,
        log_file=settings.data_dir / "chain" / "anvil.log",
    )
    resumed = settings.chain_state_file.exists()
    node.start()
    console.print(
        f"local chain on {node.url} ({'resumed' if resumed else 'new'}, state in {settings.chain_state_file})"
    )
    return node


def ensure_deployed(settings: Settings, console: Console) -> None:
    w3 = connect(settings.chain_urls)
    check_chain_id(w3, settings.expected_chain_id)
    existing = load_deployment(settings.deployment_dir, settings.expected_chain_id)
    if existing is not None:
        if not is_live(w3, existing):
            raise SystemExit(
                f"{settings.deployment_dir} records contracts that this chain does not have (chain state lost?). "
                "Run `make clean-data` for a fresh start, or `essx deploy --force`."
            )
        if settings.is_local and any(n not in existing.contracts for n in LATER_CONTRACTS):
            account = service_account(is_local=True, keystore=None, password=None, password_file=None)
            ensure_contracts(
                w3,
                account,
                existing,
                settings.deployment_dir,
                MarketParams(settings.market_refund_timeout_seconds, settings.settlement_penalty_bps),
            )
            console.print(f"[green]added new platform contracts[/]: {existing.contracts}")
        return
    if not settings.is_local:
        raise SystemExit(
            f"no deployment for chain {settings.expected_chain_id}: run `essx deploy --network {settings.chain}`"
        )
    account = service_account(is_local=True, keystore=None, password=None, password_file=None)
    d = deploy(
        w3,
        account,
        network="local",
        directory=settings.deployment_dir,
        token_name=settings.token_name,
        token_symbol=settings.token_symbol,
        market=MarketParams(settings.market_refund_timeout_seconds, settings.settlement_penalty_bps),
    )
    console.print(f"[green]contracts deployed[/]: {d.contracts}")


def start_demo_sites(
    settings: Settings, engine: Engine, console: Console
) -> tuple[ThreadedCluster | None, str | None]:
    """A few simulated sites next to the API, registered on first start, so there is live data at once.
    Returns them, or why they could not start (what /readyz then reports)."""

    demo, failure = start_demo_cluster(settings.demo_sites, settings.demo_sites_base_port, engine=engine)
    if demo is not None:
        new = register_cluster(engine, demo)
        console.print(
            f"{len(demo.ports)} simulated ESS sites on ports {', '.join(map(str, demo.ports))}"
            + (f" ({new} registered)" if new else "")
        )
    elif failure:
        console.print(
            f"[red]{failure}[/] (/readyz reports it; set ESSX_DEMO_SITES_BASE_PORT or ESSX_DEMO_SITES=0)"
        )
    return demo, failure


def run_service(settings: Settings, console: Console) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so `finally` runs
    # and the local chain is stopped (and its state saved) instead of being orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    private_dir(settings.data_dir)  # database, local secrets, chain state: the owner's only
    upgrade(settings.sqlalchemy_url)
    node = start_local_chain(settings, console) if settings.is_local else None
    demo = None
    try:
        ensure_deployed(settings, console)
        if "collector_enabled" not in settings.model_fields_set:  # development: the collector runs in-process
            settings = settings.model_copy(update={"collector_enabled": True})
        engine = make_engine(settings.sqlalchemy_url)
        with Session(engine) as session:
            has_admin = session.exec(select(User).where(User.role == Role.admin)).first() is not None
        demo, failure = start_demo_sites(settings, engine, console)
        engine.dispose()
        if failure:
            settings = settings.model_copy(update={"demo_sites_failure": failure})
            os.environ["ESSX_DEMO_SITES_FAILURE"] = failure  # for worker processes (ESSX_WORKERS > 1)
        for line in banner(settings, has_admin):
            console.print(line)
        serve(settings)
    finally:
        if demo is not None:
            demo.stop()
        if node is not None:
            node.stop()  # SIGTERM: anvil writes its state file before it exits
            console.print("local chain stopped, state saved")


def banner(settings: Settings, has_admin: bool) -> list[str]:
    """What `essx run` prints once everything is up. No password in it: create-admin asks for one."""
    base = f"http://{settings.host}:{settings.port}"
    lines = [f"[bold green]ESSX[/] serving {base}  (API docs: {base}/docs)"]
    if not has_admin:
        lines.append(
            "create the first admin in another terminal (it asks for the password):\n"
            "  .venv/bin/essx create-admin --email admin@example.com"
        )
    lines.append(
        "a simulated community trading for a day (its own chain and data, a few minutes):\n"
        "  .venv/bin/essx demo --households 20 --hours 24 --speed 720   (docs/demo.md)"
    )
    return lines


# uvloop's event loop and httptools' HTTP parser: uvicorn's pure-Python fallbacks (asyncio, h11) cost
# several times their CPU per request. No proxy headers: uvicorn would believe X-Forwarded-For from any
# peer on 127.0.0.1 and replace the client's address before the app sees it; ESSX_TRUSTED_PROXIES alone
# decides whose it believes (app/api/deps.py `client_address`), and nothing reads X-Forwarded-Proto.
FAST: dict[str, Any] = {"loop": "uvloop", "http": "httptools", "proxy_headers": False}


def serve(settings: Settings) -> None:
    """One process (the default), or ESSX_WORKERS API processes sharing the port. Worker processes are
    started afresh (spawn) and read their settings from the environment, so what this process decided is
    passed on there; the local secrets are created here first, so every worker reads the same ones."""
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, **FAST)
        return
    for name in ("jwt_secret", "wallet_master_key"):
        settings.secret(name)
    if settings.collector_enabled:
        os.environ["ESSX_COLLECTOR_ENABLED"] = "true"  # each worker runs it; its lease picks one
    config = uvicorn.Config(
        "app.main:create_worker_app",
        factory=True,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_config=None,
        # uvicorn kills a worker that has not answered its health check within 5 s and starts another: on a
        # busy machine a worker still importing the app missed it, again and again, and never served
        timeout_worker_healthcheck=60,
        **FAST,
    )
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C before the supervisor took SIGINT
        WorkerSupervisor(config, sockets=[config.bind_socket()]).run()


class WorkerSupervisor(Multiprocess):
    """uvicorn's supervisor of the worker processes, which also notices at once a worker that dies while
    it waits for that worker's health-check answer.

    The parent asks each worker in turn over a pipe and waits up to ``timeout_worker_healthcheck`` for the
    answer; a dead worker should end that wait with EOF, but uvicorn's parent kept its own copy of the
    worker's end of the pipe open, so no EOF came: a worker killed (kill -9, the OOM killer) while its
    answer was awaited (on a busy machine the answers are slow, so often) was replaced only after the full
    60 s. Meanwhile one process served alone (or none, if it died too) and Ctrl-C went unheard (the parent
    reads signals between rounds). So the parent closes its copy once the worker has its own."""

    def keep_subprocess_alive(self) -> None:
        for worker in self.processes:
            if worker.pid is not None:  # started: the child holds its own copy of its end
                worker.child_conn.close()  # (closing twice is harmless; uvicorn closes it again at the end)
        super().keep_subprocess_alive()
