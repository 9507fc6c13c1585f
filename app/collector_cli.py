"""`essx simulate`, `essx sim-fault` and `essx collector`: the ESS collector's commands."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.console import Console

from app.context import build_context
from app.core.config import get_settings
from app.core.db import make_engine
from app.core.logging import configure_logging
from app.market.service import sold_by_site
from app.runner import ensure_deployed
from app.sites.demo import SIMULATE, register_cluster
from app.sites.worker import COLLECTOR_KINDS, CollectorWorker, install_hooks
from ess_collector.simulator import SimulatorCluster, ThreadedCluster
from ess_collector.simulator_control import ControlServer

console = Console()


def simulate(
    sites: Annotated[int, typer.Option(help="how many sites, one TCP port each")] = 10,
    base_port: Annotated[int, typer.Option(help="port of the first site")] = 15020,
    speed: Annotated[float, typer.Option(help="simulated seconds per wall second")] = 1.0,
    seed: Annotated[int, typer.Option(help="sites with the same seed behave the same")] = 0,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    control_port: Annotated[int, typer.Option(help="HTTP control endpoint for faults; 0 = none")] = 15019,
    register: Annotated[bool, typer.Option(help="register the sites in the configured database")] = False,
) -> None:
    """Serve simulated ESS sites over Modbus TCP (SunSpec map), with a fault-switch endpoint."""

    cluster = ThreadedCluster(SimulatorCluster(sites, seed=seed, speed=speed, host=host, base_port=base_port))
    cluster.start()
    control = ControlServer(cluster, port=control_port).start() if control_port else None
    try:
        console.print(f"[green]{sites} simulated sites[/] on {host}:{cluster.ports[0]}..{cluster.ports[-1]}")
        if control is not None:
            console.print(
                f"faults: essx sim-fault 0 frozen   (or POST http://127.0.0.1:{control.port}/sites/0/faults/frozen)"
            )
        if register:
            engine = make_engine(get_settings().sqlalchemy_url)
            new = register_cluster(engine, cluster, only_if_empty=False, source=SIMULATE)
            engine.dispose()
            console.print(f"registered {new} new sites")
        _wait_for_signal()
    finally:
        if control is not None:
            control.stop()
        cluster.stop()


def sim_fault(
    index: Annotated[int, typer.Argument(help="site index (0-based)")],
    name: Annotated[
        str, typer.Argument(help="frozen, slow, busy, counter_reset, spike, inverter_fault, ...")
    ],
    off: Annotated[bool, typer.Option("--off", help="switch the fault off")] = False,
    delay_s: Annotated[float, typer.Option(help="for slow: response delay")] = 5.0,
    polls: Annotated[int, typer.Option(help="for spike: how many reads")] = 3,
    control: Annotated[str, typer.Option(help="the simulator's control endpoint")] = "http://127.0.0.1:15019",
) -> None:
    """Switch a fault of a running `essx simulate` (name `clear` clears them all)."""
    import httpx

    params = {"enabled": "0" if off else "1", "delay_s": str(delay_s), "polls": str(polls)}
    try:
        r = httpx.post(f"{control}/sites/{index}/faults/{name}", params=params, timeout=10)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the simulator at {control}: {exc}[/]")
        raise typer.Exit(1) from None
    if r.status_code != 200:
        console.print(f"[red]{r.json().get('detail')}[/]")
        raise typer.Exit(1)
    console.print(r.json())


def collector() -> None:
    """Run the collector on its own (production): polls, slot energies, anchoring, rewards."""

    settings = get_settings()
    configure_logging(settings.log_json)
    if settings.is_local:
        ensure_deployed(settings, console)  # adds MeterLedger to an older local deployment
    # This process's relayer sends and finishes only the collector's kinds (anchors, reward mints): the
    # service's relayer finishes every other kind with the handlers registered there (app/main.py).
    ctx = build_context(settings, relay_kinds=COLLECTOR_KINDS)
    install_hooks(ctx)
    # runs the relayer while it holds the collector lease
    worker = CollectorWorker(ctx, sold_by_site=sold_by_site, own_relayer=True)
    worker.start()
    console.print(
        f"[green]collector running[/] (poll every {settings.poll_interval_seconds:g} s, "
        f"{settings.slot_minutes}-minute slots, lease holder {worker.lease.holder})"
    )
    try:
        _wait_for_signal()
    finally:
        worker.stop()
        ctx.close()
        console.print("collector stopped")


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()


def register_commands(cli: typer.Typer) -> None:
    cli.command()(simulate)
    cli.command("sim-fault")(sim_fault)
    cli.command()(collector)
