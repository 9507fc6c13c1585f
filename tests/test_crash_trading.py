"""Kill a real service right after its trading agent placed an order; the restart never places it twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.polling import wait_until
from tests.service_process import PIN, ServiceProcess

pytestmark = pytest.mark.process  # runs `essx run` as a child process


def test_killed_after_the_agent_placed_an_order_places_it_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    svc = ServiceProcess(data, ESSX_DEMO_SITES="0", ESSX_COLLECTOR_ENABLED="false")
    try:
        svc.start(ESSX_CRASH_AT="trading.after_place")
        admin = {"Authorization": f"Bearer {svc.admin_token()}"}
        _id, sam, address = svc.user_with_wallet("sam@example.com")
        svc.mint(admin, address, "100", key="f")
        profile = {"enabled": True, "expected_use_wh": 200, "daily_limit": "100", "pin": PIN}
        r = httpx.put(f"{svc.base}/api/v1/trading/profile", json=profile, headers=sam, timeout=30)
        assert r.status_code == 200, r.text
        assert svc.wait_dead(60) == 137  # died right after committing the agent's first order
        with sqlite3.connect(data / "essx.db") as db:
            assert db.execute("SELECT count(*) FROM orders").fetchone() == (1,)
        svc.start()

        def placed() -> list[tuple[str, int]]:  # per slot, the orders that are not cancelled
            with sqlite3.connect(data / "essx.db") as db:
                return db.execute(
                    "SELECT slot_start, count(*) FROM orders WHERE status != 'cancelled' GROUP BY slot_start"
                ).fetchall()

        # the restarted agent (no crash point now) keeps the committed order and places the other slots;
        # it may reprice an order (cancel, then place), but never holds two for one slot
        slots = wait_until(lambda: (rows := placed()) and len(rows) >= 4 and rows, timeout=60)
        assert slots and all(count == 1 for _, count in slots), slots
        with sqlite3.connect(data / "essx.db") as db:
            unexplained = db.execute(
                "SELECT id FROM orders WHERE status = 'cancelled' AND id NOT IN (SELECT order_id FROM "
                "trading_activity WHERE action = 'cancelled' AND order_id IS NOT NULL)"
            ).fetchall()
            orders = db.execute("SELECT count(*) FROM orders").fetchone()[0]
            links = db.execute("SELECT count(*), count(live_key) FROM trading_agent_orders").fetchone()
        assert unexplained == []  # a cancelled order is one the agent repriced or no longer wanted
        assert links[0] == orders and links[1] >= len(slots)
    finally:
        svc.stop()
