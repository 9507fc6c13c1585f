"""`essx demo` end to end: its own service, real sites over Modbus, the real market, chain and settlement.

A small community trades four daylight hours at 720x; the test then checks the live service through its
public API (coins conserved in every wallet, every order final, every traded slot anchored) and the report.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from app.demo import community as cm
from app.demo.run import DemoOptions, DemoState, run_demo
from app.demo.service import ServiceHandle

pytestmark = pytest.mark.process  # runs `essx run` as a child process

FUNDING = "5000"


def last_daylight_start(hours: int) -> datetime:
    """02:00 UTC (11:00 in Korea, where the simulated sites are) on the latest day it lies in the past."""
    now = datetime.now(UTC)
    start = now.replace(hour=2, minute=0, second=0, microsecond=0)
    while start + timedelta(hours=hours, minutes=30) > now:
        start -= timedelta(days=1)
    return start


def test_demo_trades_settles_and_reports(tmp_path: Path) -> None:
    checked: dict[str, object] = {}

    def check_live_service(svc: ServiceHandle, state: DemoState) -> None:
        api = httpx.Client(base_url=f"{svc.base}/api/v1", timeout=30)
        span = {"from": state.trading_start.isoformat(), "to": state.trading_end.isoformat()}
        for h in state.households:
            auth = {"Authorization": f"Bearer {h.token}"}
            st = api.get("/statements", params={"month": f"{state.trading_start:%Y-%m}"}, headers=auth).json()
            wallet = api.get("/wallets/me", headers=auth).json()
            # Settled trades paid and received; a trade still pending holds the buyer's escrow.
            escrow = Decimal(st["pending"]["coins_in_escrow"])
            expected = Decimal(FUNDING) - Decimal(st["coins_paid"]) - escrow + Decimal(st["coins_received"])
            assert Decimal(wallet["balance"]) == expected, (h.name, wallet, st)
            orders = api.get("/orders", headers=auth).json()["items"]
            assert all(o["status"] in ("filled", "expired", "cancelled", "failed") for o in orders), orders
        summary = api.get(
            "/admin/market/summary", params=span, headers={"Authorization": f"Bearer {state.admin_token}"}
        ).json()
        ledger = {s["slot_start"] for s in api.get("/ledger/slots", params={**span, "limit": 100}).json()}
        for s in summary["slots"]:
            assert s["slot_start"].replace("+00:00", "Z") in {x.replace("+00:00", "Z") for x in ledger}
        checked["summary"] = summary

    hours = 4
    options = DemoOptions(
        households=5,
        hours=hours,
        speed=720,
        funding=FUNDING,
        start=last_daylight_start(hours),
        data_dir=tmp_path / "demo",
        out_dir=tmp_path / "report",
    )
    report = run_demo(options, Console(width=120), on_ready=check_live_service)

    summary = checked["summary"]
    assert isinstance(summary, dict)
    assert summary["trades"] > 0 and summary["pending"] == 0 and summary["settled"] == summary["trades"]
    numbers = json.loads((tmp_path / "report" / "report.json").read_text())
    assert numbers["trades"] == summary["trades"]
    assert 0 < numbers["delivered_wh"] <= numbers["volume_wh"]
    assert numbers["orders"]["buy"] > 0 and numbers["orders"]["sell"] > 0
    assert numbers["transactions"] > 0 and numbers["gas"] > 21_000 * numbers["transactions"]
    # the local-volume table: per slot and in total, the shares stated as of delivered energy
    rows = numbers["slots"]
    assert len(rows) == hours and sum(r["contracted_wh"] for r in rows) == numbers["volume_wh"]
    assert sum(r["delivered_wh"] for r in rows) == numbers["delivered_wh"]
    assert all(r["feasible_wh"] == min(r["export_wh"], r["import_wh"]) for r in rows)
    assert numbers["feasible_wh"] == sum(r["feasible_wh"] for r in rows)
    assert numbers["delivered_over_contracted"] == f"{numbers['delivered_wh'] / numbers['volume_wh']:.3f}"
    assert numbers["gas_per_trade"] == numbers["gas"] // numbers["trades"]
    text = report.read_text()
    assert "share of the feasible volume traded, by delivered energy" in text
    assert "retail (first tier)" in text
    for heading in ("## Energy", "## Local volume", "## Market", "## Households", "## On chain"):
        assert heading in text
    assert "EnergyMarket.settleBatches" in text and "MeterLedger.anchor" in text
    for chart in ("prices.png", "energy.png", "savings.png"):
        assert (tmp_path / "report" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({chart})" in text
    assert sum(1 for h in cm.plan_community(5) if h.role == "consumer") == 1
