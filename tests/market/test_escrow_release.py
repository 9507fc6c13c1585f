"""An escrow release whose transaction reverts on chain: the order leaves `releasing` for `locked` again with
no release in flight, its coins stay in escrow, and the next release (the gate-closure batch) returns them.

The release is real: `app.market.service.cancel` makes it (`escrow.release_one`), the relayer sends it to
anvil and finishes it through `escrow.release_final`. It reverts because it is sent with too little gas (the
gas estimate is the one thing the test replaces), which is how a release fails on chain whatever the cause:
a receipt with status 0."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.context import Context
from app.core.security import utcnow
from app.events.models import UserEvent
from app.main import create_app
from app.market import escrow
from app.market import service as market
from app.market.models import EscrowStatus, Order, OrderStatus
from app.market.onchain import id32
from app.users.models import User
from tests.api.helpers import admin_headers, idem
from tests.api.market_helpers import charged_seller, sell_order
from tests.api.wallet_helpers import PIN, fund, user_with_custodial_wallet
from tests.polling import wait_until
from wallet.models import OutgoingTx
from wallet.relayer import TxStatus

COIN = 10**18
TOO_LITTLE_GAS = 25_000  # above a release's intrinsic gas (so the node takes it), far below what it needs


def _locked_buy_order(ctx: Context) -> tuple[int, str, str]:
    """A buyer's 500 Wh order at 150 of which 300 Wh traded and were recorded: open, its escrow locked on
    chain. The service's background workers run only while it is set up, so that nothing but the test
    releases the escrow afterwards. Returns (buyer's user id, wallet address, order id)."""
    r = market.rules(ctx)
    slot = (r.slot_of(utcnow()) + 2 * r.slot).isoformat()
    with TestClient(create_app(ctx=ctx)) as client:
        admin = admin_headers(client, ctx)
        _s, seller, site_id = charged_seller(client, ctx, admin)
        buyer, headers, address = user_with_custodial_wallet(client)
        fund(client, admin, address, "100")
        assert sell_order(client, seller, slot, 300, "150", site_id).status_code == 201
        order = client.post(
            "/api/v1/orders",
            json={"side": "buy", "slot_start": slot, "quantity_wh": 500, "limit_price": "150"},
            headers={**headers, **idem()},
        ).json()
        r_auth = client.post(f"/api/v1/orders/{order['id']}/authorize", json={"pin": PIN}, headers=headers)
        assert r_auth.status_code == 200, r_auth.text
        locked = wait_until(
            lambda: (
                (o := client.get(f"/api/v1/orders/{order['id']}", headers=headers).json())["escrow_status"]
                == "locked"
                and o
            )
        )
        assert locked and (locked["status"], locked["filled_wh"]) == ("open", 300), locked
    return buyer["id"], address, order["id"]


def _order(ctx: Context, order_id: str) -> Order:
    with Session(ctx.engine) as s:
        order = s.get(Order, order_id)
        assert order is not None
        return order


def _released_events(ctx: Context, user_id: int) -> list[UserEvent]:
    with Session(ctx.engine) as s:
        return list(
            s.exec(
                select(UserEvent).where(
                    col(UserEvent.user_id) == user_id, col(UserEvent.kind) == "order.escrow_released"
                )
            )
        )


def test_a_reverted_release_leaves_the_escrow_locked_and_the_next_release_returns_the_coins(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, address, order_id = _locked_buy_order(ctx)
    contract = ctx.contracts["EnergyMarket"]
    held = contract.functions.escrows(id32(order_id)).call()
    assert held[3] == 200 and held[4] == 200 * 150 * COIN // 1000  # the open 200 Wh at the limit price
    wallet_before = ctx.coin.functions.balanceOf(address).call()
    market_before = ctx.coin.functions.balanceOf(contract.address).call()

    # the buyer cancels; the release transaction is mined and reverts (out of gas)
    def too_little(**_call: Any) -> int:
        return TOO_LITTLE_GAS

    monkeypatch.setattr(ctx.relayer, "estimate_gas", too_little)
    with Session(ctx.engine) as s:
        user = s.get(User, user_id)
        assert user is not None
        market.cancel(ctx, s, user, order_id)
    releasing = _order(ctx, order_id)
    assert (releasing.status, releasing.escrow_status) == (OrderStatus.cancelled, EscrowStatus.releasing)
    assert releasing.release_tx_id is not None
    failed = ctx.relayer.wait(releasing.release_tx_id, timeout=30)
    assert failed.status == TxStatus.failed and failed.tx_hash, failed
    receipt = ctx.w3.eth.get_transaction_receipt(failed.tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 0 and receipt["gasUsed"] == TOO_LITTLE_GAS  # reverted on chain, really

    # no release in flight any more: locked again, and the coins are still in escrow
    order = _order(ctx, order_id)
    assert (order.status, order.escrow_status, order.release_tx_id) == (
        OrderStatus.cancelled,
        EscrowStatus.locked,
        None,
    )
    assert contract.functions.escrows(id32(order_id)).call() == held
    assert ctx.coin.functions.balanceOf(address).call() == wallet_before
    assert ctx.coin.functions.balanceOf(contract.address).call() == market_before
    assert _released_events(ctx, user_id) == []

    # being locked (and cancelled), the order is picked up by the next release: this one confirms
    monkeypatch.undo()
    with Session(ctx.engine) as s:
        assert escrow.release_closed(ctx, s, market.rules(ctx), utcnow()) == 1
        s.commit()
    batch = _order(ctx, order_id)
    assert batch.escrow_status == EscrowStatus.releasing and batch.release_tx_id not in (None, failed.id)
    assert batch.release_tx_id is not None
    confirmed = ctx.relayer.wait(batch.release_tx_id, timeout=30)
    assert confirmed.status == TxStatus.confirmed, confirmed
    with Session(ctx.engine) as s:
        row = s.get(OutgoingTx, confirmed.id)
        assert row is not None and row.purpose == "escrow_release_batch"
    order = _order(ctx, order_id)
    assert (order.escrow_status, order.release_tx_id) == (EscrowStatus.released, confirmed.id)
    assert [e.data["order_id"] for e in _released_events(ctx, user_id)] == [order_id]
    after = contract.functions.escrows(id32(order_id)).call()
    assert (after[3], after[4]) == (0, 0)  # nothing open, nothing left for the open part
    assert ctx.coin.functions.balanceOf(address).call() == wallet_before + held[4]
    assert ctx.coin.functions.balanceOf(contract.address).call() == market_before - held[4]
