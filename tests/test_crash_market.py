"""Kill a real service while it records a trade on chain; the restart records it exactly once."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from web3 import Web3

from app.market.onchain import id32
from contracts.artifacts import load_artifact
from tests.polling import wait_until
from tests.service_process import PIN, ServiceProcess
from wallet.localchain import free_port

pytestmark = pytest.mark.process  # runs `essx run` as a child process


def test_killed_while_recording_a_trade_records_it_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    svc = ServiceProcess(data, ESSX_DEMO_SITES="0", ESSX_COLLECTOR_ENABLED="false")
    try:
        svc.start(ESSX_CRASH_AT="relayer.after_broadcast:trade_batch")
        admin = {"Authorization": f"Bearer {svc.admin_token()}"}
        seller_id, seller, _ = svc.user_with_wallet("seller@example.com", "prosumer")
        httpx.post(f"{svc.base}/api/v1/admin/users/{seller_id}/approve", headers=admin)
        _b, buyer, buyer_addr = svc.user_with_wallet("buyer@example.com")
        svc.mint(admin, buyer_addr, "100", key="f")
        site = httpx.post(
            f"{svc.base}/api/v1/sites",
            json={
                "name": "roof",
                "host": "127.0.0.1",
                "port": free_port(),
                "pv_nameplate_w": 5000,
                "battery_capacity_wh": 10_000,
            },
            headers=seller,
        ).json()
        with sqlite3.connect(data / "essx.db") as db:  # a fresh reading: plenty of battery to sell from
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            db.execute(
                "INSERT INTO site_readings (site_id, ts, quality, soc_tenths, accepted) VALUES (?, ?, 'ok', 900, 1)",
                (site["id"], now),
            )
        start = datetime.now(UTC).replace(second=0, microsecond=0)
        slot = (start - timedelta(minutes=start.minute % 15) + timedelta(minutes=30)).isoformat()
        r = httpx.post(
            f"{svc.base}/api/v1/orders",
            json={
                "side": "sell",
                "slot_start": slot,
                "quantity_wh": 400,
                "limit_price": "150",
                "site_id": site["id"],
            },
            headers={**seller, "Idempotency-Key": "s"},
        )
        assert r.status_code == 201, r.text
        buy = httpx.post(
            f"{svc.base}/api/v1/orders",
            json={"side": "buy", "slot_start": slot, "quantity_wh": 400, "limit_price": "200"},
            headers={**buyer, "Idempotency-Key": "b"},
        ).json()
        httpx.post(
            f"{svc.base}/api/v1/orders/{buy['id']}/authorize", json={"pin": PIN}, headers=buyer, timeout=30
        )
        assert svc.wait_dead(60) == 137  # died right after broadcasting the trade batch
        svc.start()
        recorded = wait_until(
            lambda: [
                t
                for t in httpx.get(f"{svc.base}/api/v1/trades", headers=buyer).json()["items"]
                if t["status"] == "recorded"
            ],
            timeout=40,
        )
        assert len(recorded) == 1, httpx.get(f"{svc.base}/api/v1/trades", headers=buyer).json()
        assert httpx.get(f"{svc.base}/api/v1/orders/{buy['id']}", headers=buyer).json()["status"] == "filled"
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{svc.chain_port}"))
        addresses = json.loads((data / "deployments" / "31337.json").read_text())["contracts"]
        market = w3.eth.contract(address=addresses["EnergyMarket"], abi=load_artifact("EnergyMarket").abi)
        assert market.functions.tradeCount().call() == 1  # recorded once
        # filled: the batch locked and closed it, so nothing of the escrow is stored (the buyer is in the trade's
        # leaf); 80 coins (400 Wh x 200 / 1000) moved to the trade, once (the balance below)
        escrow = market.functions.escrows(id32(buy["id"])).call()
        assert escrow[0] == "0x" + "00" * 20 and escrow[3:6] == [0, 0, 0]
        coin = w3.eth.contract(address=addresses["EnergyCoin"], abi=load_artifact("EnergyCoin").abi)
        assert coin.functions.balanceOf(buyer_addr).call() == 20 * 10**18
    finally:
        svc.stop()
