"""What one user's turn in the automatic trader's pass reads: once for all its slots, not per slot."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlmodel import Session, col, select

from app.context import Context
from app.market.models import Order
from app.trading import agent
from app.wallets import service as wallets
from tests.api.helpers import admin_headers
from tests.api.wallet_helpers import PIN, fund, user_with_custodial_wallet


@pytest.fixture(autouse=True)
def midday(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in tests/api/test_trading.py: energy time a minute into a slot at 12:01 local."""
    monkeypatch.setenv("ESSX_CLOCK_START", f"{datetime.now(UTC).date()}T03:01:00+00:00")


def test_a_turn_reads_the_agents_orders_once_and_opens_the_key_once(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = admin_headers(client, ctx)
    buyer, headers, address = user_with_custodial_wallet(client)
    fund(client, admin, address, "1000")
    body = {
        "enabled": True,
        "max_wh_per_slot": 2000,
        "daily_limit": "100",
        "expected_use_wh": 200,
        "pin": PIN,
    }
    assert client.put("/api/v1/trading/profile", json=body, headers=headers).status_code == 200
    statements: list[str] = []
    opened: list[str] = []
    signer_for = wallets.signer_for

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def counted(ctx_: Context, wallet: Any) -> Any:
        opened.append(wallet.address)
        return signer_for(ctx_, wallet)

    monkeypatch.setattr(wallets, "signer_for", counted)
    event.listen(ctx.engine, "before_cursor_execute", seen)
    try:
        agent.run_pass(ctx)
    finally:
        event.remove(ctx.engine, "before_cursor_execute", seen)
    with Session(ctx.engine) as s:
        placed = s.exec(select(Order).where(col(Order.user_id) == buyer["id"])).all()
    assert len(placed) == agent.AGENT_SLOTS and all(o.status == "open" for o in placed)
    assert opened == [address]  # one key opening for the four escrows
    # the live orders, what they traded, today's committed escrow: one read each for the four slots
    # (it was one per slot and side: 12 for these four buys)
    reads = [q for q in statements if q.lstrip().startswith("SELECT") and "trading_agent_orders" in q]
    assert len(reads) == 3, reads
    own_open = [q for q in statements if "SELECT orders.slot_start, orders.side, orders.limit_price" in q]
    assert len(own_open) == 1, own_open
    # the price suggestion's reads about the user (month's kWh, last trades): once for the turn, not per slot
    # (it was four per slot: the user's sites, their imports, their market buys, the last trade prices)
    month = [q for q in statements if "FROM slot_energies" in q]
    assert len(month) == 1, month
    last_trades = [q for q in statements if "ORDER BY trades.created_at DESC" in q]
    assert len(last_trades) == 1, last_trades
