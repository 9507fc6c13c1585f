"""What the dashboard (and any wallet-connecting client) needs from the API: the chain as a browser wallet
adds it, the coin's icon, the mint and burn history, one price band, and errors that speak in coins."""

from __future__ import annotations

import struct
from decimal import Decimal

from fastapi.testclient import TestClient
from web3 import Web3

from app.coin.service import wallet_network
from app.context import Context
from app.core.config import Settings
from app.core.security import utcnow
from app.indexer.service import catch_up
from app.market.service import rules
from tests.api.helpers import admin_headers, idem, login, register
from tests.api.wallet_helpers import fund, user_with_custodial_wallet

COIN = 10**18


def test_coin_info_names_the_chain_for_browser_wallets_and_serves_its_icon(
    client: TestClient, ctx: Context, anvil_url: str
) -> None:
    coin = client.get("/api/v1/coin").json()
    net = coin["network"]
    assert net["chain_id_hex"] == hex(coin["chain_id"]) == "0x7a69"
    assert net["rpc_urls"] == [anvil_url]  # a wallet on this machine reaches the local chain here
    assert Web3(Web3.HTTPProvider(net["rpc_urls"][0])).eth.chain_id == coin["chain_id"]
    assert net["native_currency"] == {"name": "KAIA", "symbol": "KAIA", "decimals": 18}
    assert net["block_explorer_urls"] is None  # wallets refuse an empty list; there is no explorer locally

    icon = client.get(coin["icon_url"])
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    assert icon.content[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", icon.content[16:24])  # the IHDR chunk
    assert (width, height) == (256, 256)  # wallets want a square of at least 96 px


def test_wallet_network_offers_public_endpoints_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    keyed = "https://kaia.example.com/v1/secret-api-key"
    kairos = Settings(
        data_dir=tmp_path,
        chain="kairos",
        rpc_urls=[keyed],
        jwt_secret="x" * 40,  # type: ignore[arg-type]
        wallet_master_key="11" * 32,  # type: ignore[arg-type]
        service_keystore=tmp_path / "k.json",
    )
    net = wallet_network(kairos, 1001)
    assert net.chain_id_hex == "0x3e9" and net.chain_name == "Kaia Kairos Testnet"
    assert net.rpc_urls == ["https://public-en-kairos.node.kaia.io"]
    assert net.block_explorer_urls == ["https://kairos.kaiascan.io"]
    custom = kairos.model_copy(update={"chain": "custom", "chain_id": 4242})
    assert wallet_network(custom, 4242).rpc_urls == []  # never the configured (keyed) endpoint
    chosen = custom.model_copy(update={"wallet_rpc_url": "https://rpc.example.org"})
    assert wallet_network(chosen, 4242).rpc_urls == ["https://rpc.example.org"]


def test_coin_history_lists_every_mint_and_burn_with_its_reason(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _user, _headers, address = user_with_custodial_wallet(client)
    fund(client, admin, address, "7.5")
    r = client.post(
        "/api/v1/admin/coin/mint",
        json={"to": ctx.account.address, "amount": "3"},
        headers={**admin, **idem()},
    )
    assert r.status_code == 200, r.text
    burn = client.post(
        "/api/v1/admin/coin/burn", json={"amount": "1", "memo": "spoiled"}, headers={**admin, **idem()}
    )
    assert burn.status_code == 200, burn.text
    # A mint the service did not make (another minter, or before this database existed): the chain has it.
    tx = ctx.coin.functions.mint(address, 2 * COIN).transact({"from": ctx.account.address})
    ctx.w3.eth.wait_for_transaction_receipt(tx)
    catch_up(ctx)

    page = client.get("/api/v1/admin/coin/history", headers=admin)
    assert page.status_code == 200, page.text
    items = page.json()["items"]
    assert [(i["kind"], i["reason"], i["amount"]) for i in items] == [
        ("mint", "unknown", "2"),
        ("burn", "burn", "1"),
        ("mint", "mint", "3"),
        ("mint", "mint", "7.5"),
    ]
    assert items[1]["memo"] == "spoiled" and items[1]["account"] == ctx.account.address
    assert items[3]["account"] == address and items[3]["actor_email"] == "admin@example.com"
    assert all(i["tx_hash"].startswith("0x") and i["block_number"] > 0 for i in items)
    older = client.get(
        "/api/v1/admin/coin/history", params={"before_block": items[1]["block_number"]}, headers=admin
    ).json()["items"]
    assert [i["amount"] for i in older] == ["3", "7.5"]
    consumer = login(client, register(client, "consumer")["email"])
    assert client.get("/api/v1/admin/coin/history", headers=consumer).status_code == 403


def test_a_price_outside_the_band_is_refused_in_coins(client: TestClient, ctx: Context) -> None:
    _user, consumer, address = user_with_custodial_wallet(client)
    fund(client, admin_headers(client, ctx), address, "10")
    r = rules(ctx)
    slot = r.slot_of(utcnow()) + 2 * r.slot
    floor, ceiling = r.band(slot)
    resp = client.post(
        "/api/v1/orders",
        json={"side": "buy", "slot_start": slot.isoformat(), "quantity_wh": 10, "limit_price": "1"},
        headers={**consumer, **idem()},
    )
    assert resp.status_code == 422 and resp.json()["error"] == "PriceOutsideBand"
    detail = resp.json()["detail"]
    assert f"{Decimal(floor) / COIN:f}".rstrip("0").rstrip(".") in detail
    assert f"{Decimal(ceiling) / COIN:f}".rstrip("0").rstrip(".") in detail
    assert str(floor) not in detail and "base units" not in detail  # no 85000000000000000000


def test_the_suggestion_quotes_the_books_band_and_explains_the_buyers_tier(
    client: TestClient, ctx: Context
) -> None:
    _user, consumer, _address = user_with_custodial_wallet(client)
    r = rules(ctx)
    slot = (r.slot_of(utcnow()) + 2 * r.slot).isoformat()
    book = client.get("/api/v1/market/book", params={"slot_start": slot}).json()
    buy = client.get(
        "/api/v1/market/price", params={"slot_start": slot, "side": "buy"}, headers=consumer
    ).json()
    sell = client.get(
        "/api/v1/market/price", params={"slot_start": slot, "side": "sell"}, headers=consumer
    ).json()
    assert buy["band"] == {"floor": book["floor"], "ceiling": book["ceiling"]}  # one band
    assert buy["tariff_tier"] == 1 and Decimal(buy["retail_price"]) < Decimal(book["ceiling"])
    assert "tier 1 of 3" in buy["explanation"] and buy["retail_price"] in buy["explanation"]
    for p in (buy, sell):
        price = Decimal(p["suggested_price"])
        assert Decimal(book["floor"]) <= price <= Decimal(p["retail_price"])
        assert price == price.quantize(Decimal("0.01"))  # a price someone would type
    assert Decimal(sell["suggested_price"]) < Decimal(buy["suggested_price"])
