"""The market end to end on a real chain: orders, escrow, matching, on-chain recording, settlement."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.context import Context
from app.core.security import utcnow
from app.market import models as market_models
from app.market.onchain import id32, unix
from app.market.service import rules
from ess_collector.models import LedgerSlot, SlotEnergy
from tests.api.helpers import admin_headers, idem, login, register
from tests.api.market_helpers import charged_seller, sell_order
from tests.api.wallet_helpers import PIN, fund, user_with_custodial_wallet, user_with_linked_wallet
from tests.polling import wait_until
from wallet.models import OutgoingTx

COIN = 10**18


def _recorded_trade(
    client: TestClient, ctx: Context, slot: str
) -> tuple[dict[str, str], dict[str, str], int, dict[str, str], dict]:
    """An admin, a seller with a site, a funded buyer, and their 500 Wh trade at 150, recorded on chain."""
    admin = admin_headers(client, ctx)
    _s, seller, site_id = charged_seller(client, ctx, admin)
    _b, buyer, buyer_addr = user_with_custodial_wallet(client)
    fund(client, admin, buyer_addr, "100")
    sell_order(client, seller, slot, 500, "150", site_id)
    buy = client.post(
        "/api/v1/orders",
        json={"side": "buy", "slot_start": slot, "quantity_wh": 500, "limit_price": "150"},
        headers={**buyer, **idem()},
    ).json()
    client.post(f"/api/v1/orders/{buy['id']}/authorize", json={"pin": PIN}, headers=buyer)
    trade = wait_until(
        lambda: [
            t
            for t in client.get("/api/v1/trades", headers=buyer).json()["items"]
            if t["status"] == "recorded"
        ]
    )
    assert trade, "the trade was not recorded"
    return admin, seller, site_id, buyer, trade[0]


def _meter_slot(ctx: Context, slot_dt: datetime, site_id: int, root: bytes, export_wh: int = 500) -> None:
    """What the collector leaves once a slot is anchored: its ledger record and the seller site's energies."""
    with Session(ctx.engine) as s:
        s.add(
            LedgerSlot(
                slot_start=slot_dt,
                slot_minutes=ctx.settings.slot_minutes,
                root="0x" + root.hex(),
                count=1,
                pv_wh=0,
                load_wh=0,
                import_wh=0,
                export_wh=export_wh,
                battery_charge_wh=0,
                battery_discharge_wh=0,
                status="confirmed",
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
        s.add(_slot_energy(ctx, slot_dt, site_id, export_wh))
        s.commit()


def _slot_energy(
    ctx: Context, slot_dt: datetime, site_id: int, export_wh: int, good_polls: int = 180
) -> SlotEnergy:
    """A site's energy in a slot as the collector computes it: complete when every poll was good."""
    expected = 180
    return SlotEnergy(
        site_id=site_id,
        slot_start=slot_dt,
        slot_minutes=ctx.settings.slot_minutes,
        status="complete" if good_polls == expected else "incomplete",
        good_polls=good_polls,
        expected_polls=expected,
        export_wh=export_wh,
        import_wh=0,
        computed_at=utcnow(),
    )


def _settled_by_admin(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, str],
    slot: str,
    trade_id: str,
    **decision: str,
) -> tuple[int, str, str, str]:
    """An admin settles the slot; the trade as its buyer then sees it: (settled Wh, paid, refunded, rule)."""
    r = client.post(f"/api/v1/admin/slots/{slot}/settle", json=decision, headers=admin)
    assert r.status_code == 200 and r.json()["trades"] == 1, r.text
    assert wait_until(
        lambda: client.get(f"/api/v1/trades/{trade_id}", headers=buyer).json()["status"] == "settled"
    )
    body = client.get(f"/api/v1/trades/{trade_id}", headers=buyer).json()
    return body["settled_wh"], body["paid"], body["refunded"], body["settle_rule"]


@pytest.fixture
def slot(ctx: Context) -> str:
    r = rules(ctx)
    return (r.slot_of(utcnow()) + 2 * r.slot).isoformat()


def test_order_escrow_match_record_and_settle(
    client: TestClient, ctx: Context, slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = admin_headers(client, ctx)
    _s, seller, site_id = charged_seller(client, ctx, admin)
    _b, buyer, buyer_addr = user_with_custodial_wallet(client)
    fund(client, admin, buyer_addr, "1000")
    book = client.get("/api/v1/market/book", params={"slot_start": slot}).json()
    assert float(book["floor"]) < 150 < 200 < float(book["ceiling"])

    sell = sell_order(client, seller, slot, 1000, "150", site_id)
    assert sell.status_code == 201 and sell.json()["status"] == "open", sell.text
    buy = client.post(
        "/api/v1/orders",
        json={"side": "buy", "slot_start": slot, "quantity_wh": 600, "limit_price": "200"},
        headers={**buyer, **idem()},
    )
    assert buy.status_code == 201, buy.text
    order = buy.json()
    assert (
        order["status"] == "pending_authorization"
        and order["escrow_amount"] == "120"
        and order["challenge"]["type"] == "pin"
    )
    r = client.post(f"/api/v1/orders/{order['id']}/authorize", json={"pin": PIN}, headers=buyer)
    assert r.status_code == 200 and r.json()["escrow_status"] == "authorized", r.text
    filled = wait_until(
        lambda: client.get(f"/api/v1/orders/{order['id']}", headers=buyer).json()["status"] == "filled"
    )
    assert filled, client.get(f"/api/v1/orders/{order['id']}", headers=buyer).json()
    market = ctx.contracts["EnergyMarket"]
    trades = wait_until(
        lambda: [
            t
            for t in client.get("/api/v1/trades", headers=buyer).json()["items"]
            if t["status"] == "recorded"
        ]
    )
    assert len(trades) == 1, client.get("/api/v1/trades", headers=buyer).json()
    # locked with the trade record in one transaction: the escrow left the buyer's wallet; the order was
    # filled, so the same batch closed it (nothing left to release: no release transaction follows)
    assert ctx.coin.functions.balanceOf(market.address).call() == 120 * COIN
    locked = client.get(f"/api/v1/orders/{order['id']}", headers=buyer).json()
    assert locked["escrow_status"] == "released" and locked["escrow_tx_hash"] == trades[0]["record_tx_hash"]
    trade = trades[0]
    assert (
        trade["quantity_wh"] == 600
        and trade["price"] == "200"
        and trade["record_tx_hash"]
        and trade["side"] == "buy"
    )
    assert client.get(f"/api/v1/trades/{trade['id']}", headers=seller).json()["side"] == "sell"
    left = client.get("/api/v1/market/book", params={"slot_start": slot}).json()
    assert left["asks"] == [{"price": "150", "quantity_wh": 400}] and left["bids"] == []
    # locked and closed in one batch: the contract stored nothing of it (the buyer is in the trade's leaf)
    escrow = market.functions.escrows(id32(order["id"])).call()
    assert escrow[0] == "0x" + "00" * 20 and escrow[3:6] == [0, 0, 0]
    assert trades[0]["refund_proof"]["buyer"] == buyer_addr

    # Before settlement nothing is paid or earned: the contracted trade is pending, apart from settled figures.
    month = {"month": utcnow().strftime("%Y-%m")}
    before = client.get("/api/v1/statements", params=month, headers=seller).json()
    assert (before["sold_wh"], before["coins_received"], before["average_sell_price"]) == (0, "0", None)
    assert before["extra_income_vs_feed_in"] == "0" and before["settled_trades"] == 0
    assert before["pending"] == {
        "trades": 1,
        "bought_wh": 0,
        "sold_wh": 600,
        "coins_in_escrow": "0",
        "expected_income": "120",
    }
    buyer_before = client.get("/api/v1/statements", params=month, headers=buyer).json()
    assert buyer_before["coins_paid"] == "0" and buyer_before["pending"]["coins_in_escrow"] == "120"

    # Settlement: the slot's meter data is anchored; the seller's site exported 500 of the 600 Wh.
    slot_dt = rules(ctx).slot_of(utcnow()) + 2 * rules(ctx).slot
    ledger = ctx.contracts["MeterLedger"]
    root = b"\x11" * 32
    tx = ledger.functions.anchor(unix(slot_dt), root, 1, [0, 0, 0, 500, 0, 0]).transact(
        {"from": ctx.account.address}
    )
    ctx.w3.eth.wait_for_transaction_receipt(tx)
    _meter_slot(ctx, slot_dt, site_id, root)
    later = utcnow() + timedelta(hours=1)
    monkeypatch.setattr("common.clock.now", lambda: later)
    settled = wait_until(
        lambda: client.get(f"/api/v1/trades/{trade['id']}", headers=buyer).json()["status"] == "settled"
    )
    body = client.get(f"/api/v1/trades/{trade['id']}", headers=buyer).json()
    assert settled, body
    assert (body["contracted_wh"], body["settled_wh"], body["paid"], body["refunded"]) == (
        600,
        500,
        "100",
        "20",
    )
    seller_addr = client.get("/api/v1/wallets/me", headers=seller).json()["address"]
    assert wait_until(lambda: ctx.coin.functions.balanceOf(seller_addr).call() == 100 * COIN)
    assert wait_until(
        lambda: ctx.coin.functions.balanceOf(buyer_addr).call() == 900 * COIN
    )  # 1000 - 120 + 20
    statement = client.get(
        "/api/v1/statements", params={"month": utcnow().strftime("%Y-%m")}, headers=buyer
    ).json()
    assert statement["bought_wh"] == 500 and statement["coins_refunded"] == "20"
    assert statement["coins_paid"] == "100" and statement["pending"]["trades"] == 0
    sold = client.get("/api/v1/statements", params=month, headers=seller).json()
    assert (sold["sold_wh"], sold["coins_received"], sold["average_sell_price"]) == (500, "100", "200")
    csv = client.get(
        "/api/v1/statements",
        params={"month": utcnow().strftime("%Y-%m")},
        headers={**buyer, "Accept": "text/csv"},
    )
    assert csv.headers["content-type"].startswith("text/csv") and trade["id"] in csv.text


def test_bad_orders_are_4xx(client: TestClient, ctx: Context, slot: str) -> None:
    admin = admin_headers(client, ctx)
    _s, seller, site_id = charged_seller(client, ctx, admin)
    _c, consumer, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    r = rules(ctx)
    now = utcnow()
    base = {"side": "buy", "slot_start": slot, "quantity_wh": 100, "limit_price": "200"}
    cases = [
        ({**base, "limit_price": "1"}, "PriceOutsideBand"),
        ({**base, "limit_price": "100000"}, "PriceOutsideBand"),
        (
            {**base, "slot_start": (r.slot_of(now) + 2 * r.slot + timedelta(minutes=1)).isoformat()},
            "SlotRejected",
        ),
        ({**base, "slot_start": r.slot_of(now).isoformat()}, "SlotRejected"),
        ({**base, "slot_start": (r.slot_of(now) + timedelta(hours=30)).isoformat()}, "SlotRejected"),
        ({**base, "quantity_wh": 0}, "ValidationError"),
        ({**base, "quantity_wh": 100_000}, "InsufficientBalance"),
        ({**base, "side": "sell", "site_id": site_id}, "NotAllowedToTrade"),  # a consumer selling
    ]
    for body, error in cases:
        resp = client.post("/api/v1/orders", json=body, headers={**consumer, **idem()})
        assert 400 <= resp.status_code < 500 and resp.json()["error"] == error, (body, resp.text)
    too_much = sell_order(client, seller, slot, 50_000, "150", site_id)
    assert too_much.status_code == 422 and too_much.json()["error"] == "ExceedsSupply"
    ok = sell_order(client, seller, slot, 100, "150", site_id).json()
    assert client.delete(f"/api/v1/orders/{ok['id']}", headers=consumer).status_code == 404
    assert client.delete(f"/api/v1/orders/{ok['id']}", headers=seller).json()["status"] == "cancelled"
    assert client.delete(f"/api/v1/orders/{ok['id']}", headers=seller).status_code == 409
    pending = register(client, "prosumer")
    r2 = client.post("/api/v1/orders", json=base, headers={**login(client, pending["email"]), **idem()})
    assert r2.status_code == 403  # not approved yet
    assert client.get("/api/v1/statements", params={"month": "2999-01"}, headers=consumer).status_code == 400
    Account.create()


def test_price_suggestion_summary_and_admin_settle_checks(
    client: TestClient, ctx: Context, slot: str
) -> None:
    admin = admin_headers(client, ctx)
    _c, consumer, _addr = user_with_custodial_wallet(client)
    p = client.get(
        "/api/v1/market/price", params={"slot_start": slot, "side": "buy"}, headers=consumer
    ).json()
    floor, ceiling, suggested = (
        float(p["band"]["floor"]),
        float(p["band"]["ceiling"]),
        float(p["suggested_price"]),
    )
    assert floor <= suggested <= ceiling and p["tariff_tier"] == 1 and "computed_from" in p
    sell = client.get(
        "/api/v1/market/price", params={"slot_start": slot, "side": "sell"}, headers=consumer
    ).json()
    assert float(sell["suggested_price"]) < suggested  # sellers are nudged down, buyers up
    now = utcnow()
    summary = client.get(
        "/api/v1/admin/market/summary",
        params={"from": (now - timedelta(days=1)).isoformat(), "to": (now + timedelta(days=1)).isoformat()},
        headers=admin,
    )
    assert summary.status_code == 200 and summary.json()["trades"] == 0
    assert (
        client.get(
            "/api/v1/admin/market/summary",
            params={"from": now.isoformat(), "to": now.isoformat()},
            headers=consumer,
        ).status_code
        == 403
    )
    decision = {"rule": "contracted", "reason": "meter offline"}
    assert (
        client.post(f"/api/v1/admin/slots/{slot}/settle", json=decision, headers=admin).status_code == 409
    )  # not over
    past = (rules(ctx).slot_of(now) - 4 * rules(ctx).slot).isoformat()
    r = client.post(f"/api/v1/admin/slots/{past}/settle", json=decision, headers=admin)
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    assert (
        client.post(f"/api/v1/admin/slots/{past}/settle", json=decision, headers=consumer).status_code == 403
    )
    info = client.get("/api/v1/market").json()
    assert info["slot_minutes"] == 15 and info["gate_closure_minutes"] == 5 and len(info["next_slots"]) == 4


def test_direct_offer_trades_only_with_the_named_buyer(client: TestClient, ctx: Context, slot: str) -> None:
    admin = admin_headers(client, ctx)
    seller_user, seller, site_id = charged_seller(client, ctx, admin)
    buyer_user, buyer, buyer_addr = user_with_custodial_wallet(client)
    _o, other, other_addr = user_with_custodial_wallet(client)
    fund(client, admin, buyer_addr, "100")
    fund(client, admin, other_addr, "100")
    offer = client.post(
        "/api/v1/orders",
        json={
            "side": "sell",
            "slot_start": slot,
            "quantity_wh": 300,
            "limit_price": "160",
            "site_id": site_id,
            "counterpart_id": buyer_user["id"],
        },
        headers={**seller, **idem()},
    ).json()
    assert offer["status"] == "open"
    # not in the public book, and someone else's bid does not take it
    assert client.get("/api/v1/market/book", params={"slot_start": slot}).json()["asks"] == []
    stranger = client.post(
        "/api/v1/orders",
        json={"side": "buy", "slot_start": slot, "quantity_wh": 300, "limit_price": "200"},
        headers={**other, **idem()},
    ).json()
    client.post(f"/api/v1/orders/{stranger['id']}/authorize", json={"pin": PIN}, headers=other)
    assert [o["id"] for o in client.get("/api/v1/offers", headers=buyer).json()["items"]] == [offer["id"]]
    # the named buyer accepts by placing the opposite order that names the seller
    accept = client.post(
        "/api/v1/orders",
        json={
            "side": "buy",
            "slot_start": slot,
            "quantity_wh": 300,
            "limit_price": "160",
            "counterpart_id": seller_user["id"],
        },
        headers={**buyer, **idem()},
    ).json()
    client.post(f"/api/v1/orders/{accept['id']}/authorize", json={"pin": PIN}, headers=buyer)
    assert wait_until(
        lambda: client.get(f"/api/v1/orders/{accept['id']}", headers=buyer).json()["status"] == "filled"
    )
    trades = client.get("/api/v1/trades", headers=seller).json()["items"]
    assert [(t["buy_order_id"], t["price"], t["quantity_wh"]) for t in trades] == [(accept["id"], "160", 300)]
    assert client.get(f"/api/v1/orders/{stranger['id']}", headers=other).json()["status"] == "open"


def test_admin_settles_an_incomplete_slot_as_contracted(
    client: TestClient, ctx: Context, slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, _seller_h, _site, buyer, trade = _recorded_trade(client, ctx, slot)
    trade = [trade]
    later = utcnow() + timedelta(hours=1)
    monkeypatch.setattr("common.clock.now", lambda: later)
    # no meter data at all for the slot: nothing settles by itself
    time.sleep(2)
    assert client.get(f"/api/v1/trades/{trade[0]['id']}", headers=buyer).json()["status"] == "recorded"
    settled = _settled_by_admin(
        client, admin, buyer, slot, trade[0]["id"], rule="contracted", reason="meter offline all slot"
    )
    assert settled == (500, "75", "0", "contracted_by_admin")
    audit = client.get("/api/v1/admin/audit", headers=admin).json()["items"]
    assert audit[0]["action"] == "slot.settle" and audit[0]["details"]["reason"] == "meter offline all slot"
    again = client.post(
        f"/api/v1/admin/slots/{slot}/settle", json={"rule": "contracted", "reason": "again"}, headers=admin
    )
    assert again.status_code == 409


def test_admin_settles_an_incomplete_slot_as_measured_so_far(
    client: TestClient, ctx: Context, slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, _seller_h, site_id, buyer, trade = _recorded_trade(client, ctx, slot)
    with Session(ctx.engine) as s:  # the meter went quiet mid-slot: 200 of the 500 Wh sold were measured
        s.add(_slot_energy(ctx, datetime.fromisoformat(slot), site_id, 200, good_polls=70))
        s.commit()
    later = utcnow() + timedelta(hours=1)
    monkeypatch.setattr("common.clock.now", lambda: later)
    settled = _settled_by_admin(client, admin, buyer, slot, trade["id"], rule="measured", reason="meter lost")
    assert settled == (200, "30", "45", "measured_by_admin")


def test_call_auction_clears_at_one_price_at_gate_closure(
    client: TestClient, ctx: Context, slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx.settings.market_mechanism = "call"
    ctx.market_rules = None
    admin = admin_headers(client, ctx)
    _s, seller, site_id = charged_seller(client, ctx, admin)
    _b, buyer, buyer_addr = user_with_custodial_wallet(client)
    fund(client, admin, buyer_addr, "100")
    for qty, price in ((200, "140"), (300, "180")):
        r = client.post(
            "/api/v1/orders",
            json={
                "side": "sell",
                "slot_start": slot,
                "quantity_wh": qty,
                "limit_price": price,
                "site_id": site_id,
            },
            headers={**seller, **idem()},
        )
        assert r.status_code == 201, r.text
    buy = client.post(
        "/api/v1/orders",
        json={"side": "buy", "slot_start": slot, "quantity_wh": 400, "limit_price": "200"},
        headers={**buyer, **idem()},
    ).json()
    r = client.post(f"/api/v1/orders/{buy['id']}/authorize", json={"pin": PIN}, headers=buyer)
    assert (r.json()["status"], r.json()["escrow_status"]) == ("open", "authorized"), r.text
    time.sleep(1.5)
    assert client.get("/api/v1/trades", headers=buyer).json()["items"] == []  # nothing before gate closure
    assert ctx.coin.functions.balanceOf(buyer_addr).call() == 100 * COIN  # nothing locked before a match
    closure = rules(ctx).gate_closure(rules(ctx).slot_of(utcnow()) + 2 * rules(ctx).slot)
    monkeypatch.setattr("common.clock.now", lambda: closure + timedelta(seconds=1))
    trades = wait_until(
        lambda: [
            t
            for t in client.get("/api/v1/trades", headers=buyer).json()["items"]
            if t["status"] == "recorded"
        ]
    )
    assert sum(t["quantity_wh"] for t in trades) == 400
    assert len({t["price"] for t in trades}) == 1  # pay-as-clear: one price for everyone
    order = wait_until(lambda: client.get(f"/api/v1/orders/{buy['id']}", headers=buyer).json())
    assert order["status"] == "filled"
    # the price difference to the buyer's limit came back in the recording batch itself (the order can
    # match no more after the auction, so the batch closed it): no release transaction of its own
    assert order["escrow_status"] == "released" and order["escrow_tx_hash"] == trades[0]["record_tx_hash"]
    price = float(trades[0]["price"])
    expected = 100 - 400 * price / 1000
    assert abs(ctx.coin.functions.balanceOf(buyer_addr).call() / COIN - expected) < 1e-9
    with Session(ctx.engine) as s:
        assert not s.exec(select(OutgoingTx).where(col(OutgoingTx.purpose).contains("escrow_release"))).all()


def test_settlement_survives_a_restart_between_signing_and_sending(
    client: TestClient, ctx: Context, slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settlement batch is stored signed; a new relayer (a restarted process) sends it; paid once."""
    from app.settlement.service import settle_ready_slots
    from wallet.relayer import Relayer

    _admin, seller, site_id, buyer, trade = _recorded_trade(client, ctx, slot)
    slot_dt = rules(ctx).slot_of(utcnow()) + 2 * rules(ctx).slot
    root = b"\x22" * 32
    ctx.w3.eth.wait_for_transaction_receipt(
        ctx.contracts["MeterLedger"]
        .functions.anchor(unix(slot_dt), root, 1, [0, 0, 0, 500, 0, 0])
        .transact({"from": ctx.account.address})
    )
    ctx.relayer.stop()  # the "old process" stops sending; only its database rows remain
    _meter_slot(ctx, slot_dt, site_id, root)
    assert settle_ready_slots(ctx) == 0  # anchored, but the slot is not over: nothing to settle yet
    assert client.get(f"/api/v1/trades/{trade['id']}", headers=buyer).json()["status"] == "recorded"
    later = utcnow() + timedelta(hours=1)
    monkeypatch.setattr("common.clock.now", lambda: later)
    # signs and stores the batch; nothing is sent (the relayer is stopped)
    assert settle_ready_slots(ctx) == 1
    assert client.get(f"/api/v1/trades/{trade['id']}", headers=buyer).json()["status"] == "settling"
    assert settle_ready_slots(ctx) == 0  # a batch in flight is never signed twice
    restarted = Relayer(ctx.engine, ctx.w3, ctx.relayer.signer, ctx.chain_id)
    restarted.completions = ctx.relayer.completions
    for _ in range(40):
        restarted.step()
        if client.get(f"/api/v1/trades/{trade['id']}", headers=buyer).json()["status"] == "settled":
            break
        time.sleep(0.2)
    body = client.get(f"/api/v1/trades/{trade['id']}", headers=buyer).json()
    assert (body["status"], body["settled_wh"], body["paid"]) == ("settled", 500, "75")
    market = ctx.contracts["EnergyMarket"]
    assert market.functions.isTradeClosed(trade["trade_no"]).call() is True
    for _ in range(20):  # the pushed payouts land once
        restarted.step()
        time.sleep(0.1)
    seller_addr = client.get("/api/v1/wallets/me", headers=seller).json()["address"]
    assert ctx.coin.functions.balanceOf(seller_addr).call() == 75 * COIN


def test_a_sell_order_takes_one_change_number(client: TestClient, ctx: Context, slot: str) -> None:
    _u, headers, site_id = charged_seller(client, ctx, admin_headers(client, ctx))
    r = client.post(
        "/api/v1/orders",
        json={
            "side": "sell",
            "slot_start": slot,
            "quantity_wh": 100,
            "limit_price": "250",
            "site_id": site_id,
        },
        headers={**headers, **idem()},
    )
    assert r.status_code == 201, r.text
    with Session(ctx.engine) as s:
        row = s.get(market_models.Order, r.json()["id"])
        assert row is not None and row.seq is not None and row.seq == row.change_no
        counter = s.get(market_models.MarketChange, 1)
        assert counter is not None and counter.last_no >= row.seq
    cancelled = client.delete(f"/api/v1/orders/{r.json()['id']}", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    with Session(ctx.engine) as s:  # an update takes a new number of its own
        row = s.get(market_models.Order, r.json()["id"])
        assert row is not None and row.seq is not None and row.change_no is not None
        assert row.change_no > row.seq


def _linked_wallet_buy_order(
    client: TestClient, admin: dict[str, str], slot: str
) -> tuple[dict[str, str], LocalAccount, dict]:
    """A user whose linked wallet holds 50 coins, and its buy order (250 Wh, limit 200) awaiting its signature."""
    _u, headers, account = user_with_linked_wallet(client)
    fund(client, admin, account.address, "50")
    order = client.post(
        "/api/v1/orders",
        json={"side": "buy", "slot_start": slot, "quantity_wh": 250, "limit_price": "200"},
        headers={**headers, **idem()},
    ).json()
    return headers, account, order


def test_linked_wallet_signs_the_escrow_and_cancelling_releases_it(
    client: TestClient, ctx: Context, slot: str
) -> None:
    from eth_account.messages import encode_typed_data

    admin = admin_headers(client, ctx)
    headers, account, order = _linked_wallet_buy_order(client, admin, slot)
    typed = order["challenge"]["typed_data"]
    assert (
        typed["primaryType"] == "ReceiveWithAuthorization"
        and typed["message"]["to"] == ctx.contracts["EnergyMarket"].address
    )
    wrong = Account.create().sign_message(encode_typed_data(full_message=typed)).signature.hex()
    assert (
        client.post(
            f"/api/v1/orders/{order['id']}/authorize", json={"signature": wrong}, headers=headers
        ).status_code
        == 422
    )
    sig = account.sign_message(encode_typed_data(full_message=typed)).signature.hex()
    r = client.post(f"/api/v1/orders/{order['id']}/authorize", json={"signature": sig}, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["escrow_status"]) == ("open", "authorized")
    with Session(ctx.engine) as s:  # one number from the change counter: its priority and its change
        row = s.get(market_models.Order, order["id"])
        assert row is not None and row.seq is not None and row.seq == row.change_no
    book = client.get("/api/v1/market/book", params={"slot_start": slot}).json()
    assert book["bids"] == [{"price": "200", "quantity_wh": 250}]
    # an order that has not matched costs no gas: nothing is locked and the platform sent nothing for it
    assert ctx.coin.functions.balanceOf(account.address).call() == 50 * COIN
    assert ctx.w3.eth.get_balance(account.address) == 0
    with Session(ctx.engine) as s:
        assert not s.exec(select(OutgoingTx).where(col(OutgoingTx.purpose).contains("escrow"))).all()
    cancelled = client.delete(f"/api/v1/orders/{order['id']}", headers=headers).json()
    assert (cancelled["status"], cancelled["escrow_status"]) == ("cancelled", "unused")
    assert ctx.coin.functions.balanceOf(account.address).call() == 50 * COIN
    with Session(ctx.engine) as s:
        assert not s.exec(select(OutgoingTx).where(col(OutgoingTx.purpose).contains("escrow"))).all()


def test_a_signed_escrow_is_checked_against_a_recent_balance_and_a_refusal_against_the_chain(
    client: TestClient, ctx: Context, slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buy order's escrow binds nothing until the order matches (then the balance is read again), so its
    authorisation may answer yes from the balance the placement just read, less every hold: no eth_call.
    A balance that looks short there is read from the chain before refusing: coins received meanwhile count,
    and the refusal says what the chain and the holds leave."""
    from eth_account.messages import encode_typed_data

    from app.spending import holds

    monkeypatch.setattr(holds, "RECHECKED_BALANCE_SECONDS", 3600.0)  # no timing in the test: always recent
    admin = admin_headers(client, ctx)
    headers, account, first = _linked_wallet_buy_order(client, admin, slot)  # 50 coins, an escrow of 50
    body = {"side": "buy", "slot_start": slot, "quantity_wh": 250, "limit_price": "200"}
    second, third = (
        client.post("/api/v1/orders", json=body, headers={**headers, **idem()}).json() for _ in range(2)
    )
    assert first["escrow_amount"] == second["escrow_amount"] == third["escrow_amount"] == "50"

    calls: list[str] = []
    make_request = ctx.w3.provider.make_request

    def counted(method: Any, params: Any) -> Any:
        calls.append(str(method))
        return make_request(method, params)

    monkeypatch.setattr(ctx.w3.provider, "make_request", counted)

    def authorise(order: dict) -> Any:
        typed = order["challenge"]["typed_data"]
        sig = account.sign_message(encode_typed_data(full_message=typed)).signature.hex()
        return client.post(
            f"/api/v1/orders/{order['id']}/authorize", json={"signature": sig}, headers=headers
        )

    r = authorise(first)
    assert r.status_code == 200 and r.json()["escrow_status"] == "authorized", r.text
    assert "eth_call" not in calls  # 50 read at the placement, less the 50 now held: covered
    fund(client, admin, account.address, "50")
    r = authorise(second)  # 50 remembered less 100 held looks short: the chain says 100
    assert r.status_code == 200 and r.json()["escrow_status"] == "authorized", r.text
    calls.clear()
    r = authorise(third)  # 100 less 150 held: refused, after asking the chain
    assert r.status_code == 422 and r.json()["error"] == "InsufficientBalance", r.text
    assert "the escrow needs 50 coins; the wallet has 0 available" in r.json()["detail"]
    assert "eth_call" in calls
    assert client.get(f"/api/v1/orders/{third['id']}", headers=headers).json()["status"] == (
        "pending_authorization"
    )


def test_a_signature_after_the_balance_went_stale_reads_it_before_the_change_counter(
    client: TestClient, ctx: Context, slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phone signs seconds after the placement read the balance: the authorisation reads it again before
    it takes the change counter's lock (which every order write waits for), not while holding it."""
    from eth_account.messages import encode_typed_data

    from app.market import engine
    from app.spending import holds

    monkeypatch.setattr(holds, "RECHECKED_BALANCE_SECONDS", 3600.0)  # stale only because the cache is cleared
    admin = admin_headers(client, ctx)
    headers, account, order = _linked_wallet_buy_order(client, admin, slot)
    events: list[str] = []
    make_request, next_seq = ctx.w3.provider.make_request, engine.next_seq

    def counted(method: Any, params: Any) -> Any:
        events.append(str(method))
        return make_request(method, params)

    def locking(session: Any) -> int:
        events.append("change counter")
        return next_seq(session)

    monkeypatch.setattr(ctx.w3.provider, "make_request", counted)
    monkeypatch.setattr(engine, "next_seq", locking)
    ctx.cache.balances.clear()  # as if the phone took longer to sign than a balance stays recent
    sig = account.sign_message(
        encode_typed_data(full_message=order["challenge"]["typed_data"])
    ).signature.hex()
    r = client.post(f"/api/v1/orders/{order['id']}/authorize", json={"signature": sig}, headers=headers)
    assert r.status_code == 200 and r.json()["escrow_status"] == "authorized", r.text
    assert "change counter" in events and "eth_call" in events
    assert "eth_call" not in events[events.index("change counter") :], events


def test_a_buyer_whose_balance_no_longer_covers_the_escrow_is_skipped_at_the_match(
    client: TestClient, ctx: Context, slot: str
) -> None:
    """The authorisation is used only at the first match; a wallet emptied meanwhile (outside the platform)
    gets its order cancelled with the reason, its trade voided, and the seller's quantity back in the book."""
    from eth_account.messages import encode_typed_data

    admin = admin_headers(client, ctx)
    _s, seller, site_id = charged_seller(client, ctx, admin)
    headers, account, order = _linked_wallet_buy_order(client, admin, slot)
    sig = account.sign_message(
        encode_typed_data(full_message=order["challenge"]["typed_data"])
    ).signature.hex()
    r = client.post(f"/api/v1/orders/{order['id']}/authorize", json={"signature": sig}, headers=headers)
    assert r.status_code == 200, r.text
    # the buyer spends 40 of its 50 coins from its own wallet, behind the platform's back
    ctx.w3.eth.wait_for_transaction_receipt(
        ctx.w3.eth.send_transaction({"from": ctx.account.address, "to": account.address, "value": 10**17})
    )
    call = ctx.coin.functions.transfer(ctx.account.address, 40 * COIN).build_transaction(
        {"from": account.address, "nonce": 0, "gas": 100_000, "chainId": ctx.chain_id}
    )
    raw = account.sign_transaction(call).rawTransaction
    ctx.w3.eth.wait_for_transaction_receipt(ctx.w3.eth.send_raw_transaction(raw))
    sell = sell_order(client, seller, slot, 300, "150", site_id).json()
    skipped = wait_until(
        lambda: (
            (o := client.get(f"/api/v1/orders/{order['id']}", headers=headers).json())["status"]
            == "cancelled"
            and o
        )
    )
    assert skipped and skipped["escrow_status"] == "unused", skipped
    assert "needs 50 coins and the wallet holds 10" in skipped["failure_reason"]
    assert client.get("/api/v1/trades", headers=headers).json()["items"] == []  # the match is undone
    back = client.get(f"/api/v1/orders/{sell['id']}", headers=seller).json()
    assert (back["status"], back["open_wh"], back["filled_wh"]) == ("open", 300, 0)
    book = client.get("/api/v1/market/book", params={"slot_start": slot}).json()
    assert book["asks"] == [{"price": "150", "quantity_wh": 300}] and book["bids"] == []
    market = ctx.contracts["EnergyMarket"]
    assert market.functions.escrows(id32(order["id"])).call()[4] == 0  # never locked
    assert ctx.coin.functions.balanceOf(account.address).call() == 10 * COIN


def test_a_cancel_waits_for_a_matcher_holding_the_order_in_another_process(
    client: TestClient, ctx: Context, slot: str
) -> None:
    """With several API processes (ESSX_WORKERS) a cancel and the leader's matcher can meet on one order:
    the matcher holds the change counter's lock for its pass, which makes the cancel wait and then see the
    fill, instead of overwriting it."""
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip(
            "waiting on a lock needs PostgreSQL; several API processes are supported on PostgreSQL only"
        )
    import threading

    from app.market import engine
    from app.market.models import Order

    admin = admin_headers(client, ctx)
    _user, seller, site_id = charged_seller(client, ctx, admin)
    order = sell_order(client, seller, slot, 300, "160", site_id).json()
    assert order["status"] == "open"
    results: list[int] = []
    with Session(ctx.engine) as matcher:  # stands in for the leader's matching pass
        slot_dt = datetime.fromisoformat(slot)
        market_models.lock_changes(matcher)  # what a matching pass takes first
        assert [o.id for o in engine.book_orders(matcher, slot_dt)] == [order["id"]]
        cancel = threading.Thread(
            target=lambda: results.append(
                client.delete(f"/api/v1/orders/{order['id']}", headers=seller).status_code
            )
        )
        cancel.start()
        cancel.join(1.0)
        assert cancel.is_alive() and results == []  # waiting for the matcher's lock
        row = matcher.get(Order, order["id"])
        assert row is not None
        row.open_wh, row.filled_wh, row.status = 0, 300, "filled"
        matcher.add(row)
        matcher.commit()
    cancel.join(10)
    assert results == [409]
    after = client.get(f"/api/v1/orders/{order['id']}", headers=seller).json()
    assert (after["status"], after["open_wh"], after["filled_wh"]) == ("filled", 0, 300)


def test_the_relayer_confirms_a_batch_lock_while_the_market_worker_holds_its_lock(
    client: TestClient, ctx: Context, slot: str
) -> None:
    """The relayer finishes a batch's escrow locks inside its own write transaction, and the market worker takes
    its lock before writing: if the hook waited for that lock, each would wait for the other until the
    database's busy timeout (30 s with every writer stalled; seen in the demo)."""
    import threading

    from app.market import engine, recording
    from app.market.models import Order
    from wallet.models import OutgoingTx
    from wallet.purposes import Purpose, TxPurpose

    buyer = register(client, "consumer")
    now = utcnow()
    with Session(ctx.engine) as s:
        order = Order(
            id=uuid.uuid4().hex,
            user_id=buyer["id"],
            side="buy",
            slot_start=datetime.fromisoformat(slot),
            quantity_wh=100,
            open_wh=100,
            limit_price=150 * COIN,
            status="filled",
            escrow_status="locking",
            created_at=now,
            updated_at=now,
        )
        tx = OutgoingTx(
            chain_id=ctx.chain_id, sender="0x" + "11" * 20, nonce=10**9, data="0x", gas=100_000,
            purpose="trade_batch", status="confirmed", created_at=now, updated_at=now,
        )  # fmt: skip
        s.add(tx)
        s.flush()
        order.lock_tx_id = tx.id
        s.add(order)
        s.commit()
        order_id, tx_id = order.id, tx.id
    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def market_worker() -> None:  # between taking its lock and its first write
        with engine.slot_lock(ctx):
            held.set()
            release.wait(15)

    def relayer() -> None:
        with Session(ctx.engine) as s:
            final = s.get(OutgoingTx, tx_id)
            assert final is not None
            final.updated_at = utcnow()  # the relayer has written before it calls the hook
            s.add(final)
            s.flush()
            recording.make_hook(ctx)(s, final, Purpose(TxPurpose.trade_batch))
            s.commit()
        done.set()

    worker = threading.Thread(target=market_worker)
    worker.start()
    assert held.wait(5)
    threading.Thread(target=relayer).start()
    finished = done.wait(5)
    release.set()
    worker.join()
    assert finished, "the relayer's hook waited for the market lock"
    with Session(ctx.engine) as s:
        row = s.get(Order, order_id)
        assert row is not None and (row.status, row.escrow_status) == ("filled", "locked")


def test_an_authorisation_about_to_expire_at_the_first_match_is_skipped(
    client: TestClient, ctx: Context, slot: str
) -> None:
    """A lock that would revert (expired signature) would hold up every later batch: the order is cancelled
    instead, and the seller's order stays in the book."""
    from app.coin.service import chain_now
    from app.market.models import Order

    admin = admin_headers(client, ctx)
    _s, seller, site_id = charged_seller(client, ctx, admin)
    _b, buyer, buyer_addr = user_with_custodial_wallet(client)
    fund(client, admin, buyer_addr, "100")
    order = client.post(
        "/api/v1/orders",
        json={"side": "buy", "slot_start": slot, "quantity_wh": 200, "limit_price": "200"},
        headers={**buyer, **idem()},
    ).json()
    r = client.post(f"/api/v1/orders/{order['id']}/authorize", json={"pin": PIN}, headers=buyer)
    assert r.json()["escrow_status"] == "authorized", r.text
    with Session(ctx.engine) as s:  # as if the order had waited in the book until its signature ran out
        row = s.get(Order, order["id"])
        assert row is not None
        row.valid_before = chain_now(ctx) + 10
        s.add(row)
        s.commit()
    sell = sell_order(client, seller, slot, 200, "150", site_id).json()
    skipped = wait_until(
        lambda: (
            (o := client.get(f"/api/v1/orders/{order['id']}", headers=buyer).json())["status"] == "cancelled"
            and o
        )
    )
    assert skipped and "authorisation expired" in skipped["failure_reason"], skipped
    back = client.get(f"/api/v1/orders/{sell['id']}", headers=seller).json()
    assert (back["status"], back["open_wh"]) == ("open", 200)
    assert ctx.coin.functions.balanceOf(buyer_addr).call() == 100 * COIN
