"""The `essx demo` command."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from app.demo.options import DemoOptions, Traders


def register_commands(cli: typer.Typer) -> None:
    cli.command()(demo)


def demo(
    households: Annotated[
        int, typer.Option(help="households in the community (about a quarter are consumers)")
    ] = 20,
    hours: Annotated[int, typer.Option(help="hours of energy time to trade")] = 24,
    speed: Annotated[float, typer.Option(help="energy seconds per wall second")] = 720.0,
    slot_minutes: Annotated[int, typer.Option(help="delivery slot length")] = 60,
    seed: Annotated[int, typer.Option(help="the community's sizes and the traders' choices follow it")] = 0,
    start: Annotated[
        datetime | None,
        typer.Option(help="first traded slot in energy time, in the past (default: the day ends about now)"),
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="the demo service's own folder, emptied first")] = Path(
        "data/demo"
    ),
    out: Annotated[Path | None, typer.Option(help="report folder (default: <data-dir>/report)")] = None,
    traders: Annotated[
        Traders,
        typer.Option(help="automatic: every household's trading profile (the platform's agent); manual"),
    ] = Traders.automatic,
    keep_running: Annotated[
        bool, typer.Option(help="leave the demo service running afterwards, to browse it in the dashboard")
    ] = False,
) -> None:
    """Simulate a community trading energy for a day at high speed, then write a report."""
    from app.demo.run import run_demo

    console = Console()
    options = DemoOptions(
        households=households,
        hours=hours,
        speed=speed,
        slot_minutes=slot_minutes,
        seed=seed,
        data_dir=data_dir,
        out_dir=out,
        keep_running=keep_running,
        traders=traders,
        start=start.replace(tzinfo=UTC) if start is not None and start.tzinfo is None else start,
    )
    try:
        options.check()
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    run_demo(options, console)
