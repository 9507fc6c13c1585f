"""A browser wallet (EIP-1193) in the real dashboard against a real `essx run`: discovery, the chain switch
(adding the chain first), linking by personal_sign, the coin added to the wallet, a transfer and a buy
order signed as EIP-712 typed data and followed until confirmed on chain, and the wallet's "Reject".

The wallet is `tests/e2e/browser_wallet.py`: a provider injected into the page whose key lives in Python.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.browser_wallet import InjectedWallet
from tests.e2e.conftest import Account, Community, js_time, log_in, screenshots

if TYPE_CHECKING:
    from playwright.sync_api import Page

NewPage = Callable[..., "Page"]

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="browser tests need the Python package `playwright` (pip install -e '.[dev]')",
)
expect = sync_api.expect
# chromium drives the dashboard of a real `essx run` child process
pytestmark = [pytest.mark.browser, pytest.mark.process]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT")


def wallet_for(page: Page, community: Community, **kw: Any) -> InjectedWallet:
    wallet = InjectedWallet(expected_domain=community.base.removeprefix("http://"), **kw)
    wallet.install(page)
    return wallet


def connect_switch_and_link(page: Page, wallet: InjectedWallet, community: Community) -> None:
    page.get_by_role("button", name=f"Connect {wallet.name}").click()
    expect(page.locator("#connected-address")).to_have_text(wallet.address.lower())
    chain = page.locator("#wallet-chain")
    expect(chain).to_have_attribute("data-ok", "false")  # the wallet starts on Ethereum mainnet
    expect(page.get_by_text("Your wallet is on chain 1")).to_be_visible()
    page.get_by_role("button", name="Switch to ESSX local chain (anvil)").click()
    expect(chain).to_have_attribute("data-ok", "true")
    page.get_by_role("button", name="Link this wallet").click()
    expect(page.locator("#wallet-kind")).to_have_text("linked wallet (you sign each payment)")


def test_link_a_browser_wallet_send_and_buy_until_confirmed_on_chain(
    new_page: NewPage, community: Community, seller: Account
) -> None:
    kim = community.register("consumer", "Kim")
    bob = community.register("consumer", "Bob", wallet=True)
    assert bob.address
    page = new_page()
    wallet = wallet_for(page, community)
    log_in(page, community.base, kim.email)
    expect(page.get_by_role("heading", name="Or link a browser wallet")).to_be_visible()

    # Connect, switch (the wallet does not know the chain: added with the service's parameters), link.
    connect_switch_and_link(page, wallet, community)
    coin = community.http.get("/api/v1/coin").json()
    switches = wallet.requests("wallet_switchEthereumChain")
    assert [p[0]["chainId"] for p in switches] == ["0x7a69", "0x7a69"]  # refused (4902), then after adding
    [added] = wallet.requests("wallet_addEthereumChain")
    assert added == [
        {
            "chainId": "0x7a69",
            "chainName": "ESSX local chain (anvil)",
            "rpcUrls": [f"http://127.0.0.1:{community.service.chain_port}"],
            "nativeCurrency": {"name": "KAIA", "symbol": "KAIA", "decimals": 18},
        }
    ]
    assert wallet.chains[coin["chain_id"]]  # the wallet checked that endpoint answers with that chain id
    [sign_in] = wallet.requests("personal_sign")
    assert "wants you to sign in with your Ethereum account" in bytes.fromhex(sign_in[0][2:]).decode()
    linked = community.http.get("/api/v1/wallets/me", headers=kim.headers).json()
    assert linked["kind"] == "linked" and linked["address"] == wallet.address
    expect(page.locator("#address")).to_have_text(wallet.address)
    expect(page.locator("#balance")).to_have_text("0 ENC")
    expect(page.locator("#native-balance")).to_have_text("0")

    page.get_by_role("button", name="Add ENC to my wallet").click()
    expect(page.get_by_text("ENC is now shown in Test Wallet.")).to_be_visible()
    assert wallet.watched == [
        {
            "address": coin["address"],
            "symbol": "ENC",
            "decimals": 18,
            "image": f"{community.base}/ui/coin-icon.png",  # fetched by the wallet: it loads
        }
    ]

    community.mint(wallet.address, "50")
    expect(page.locator("#balance")).to_have_text("50 ENC", timeout=30_000)
    expect(page.locator("#recent li").first).to_contain_text("+50 ENC issued by ESSX", timeout=15_000)
    screenshots(page, "wallet-linked")

    # Send: the typed data in words, rejected once in the wallet, then signed; one transfer, confirmed.
    page.get_by_label("To", exact=True).fill(bob.address)
    page.get_by_label("Amount (ENC)").fill("2.5")
    wallet.reject_next("eth_signTypedData_v4")
    page.get_by_role("button", name="Send", exact=True).click()
    dialog = page.get_by_role("dialog", name="Sign the transfer")
    expect(dialog.locator("[data-field=to]")).to_contain_text(bob.address)
    expect(dialog.locator("[data-field=amount]")).to_have_text("2.5 ENC")
    expect(dialog.locator("[data-field=valid-until] time")).to_have_attribute("datetime", TIMESTAMP)
    screenshots(page, "wallet-sign-dialog")
    dialog.get_by_role("button", name="Sign in wallet").click()
    expect(dialog).to_have_count(0)
    message = page.locator("#send-message")
    expect(message).to_contain_text("You rejected the request in your wallet.")
    expect(message).to_contain_text("Nothing was sent")
    assert page.get_by_label("Amount (ENC)").input_value() == "2.5"  # back to the filled form

    page.get_by_role("button", name="Send", exact=True).click()
    dialog.get_by_role("button", name="Sign in wallet").click()
    progress = page.locator("#send-progress [data-status]")
    expect(progress).to_have_attribute("data-status", "confirmed", timeout=45_000)
    expect(page.locator("#balance")).to_have_text("47.5 ENC", timeout=15_000)
    transfers = community.http.get("/api/v1/transfers", headers=kim.headers).json()["items"]
    assert [(t["amount"], t["status"]) for t in transfers] == [("2.5", "confirmed")]  # not created twice
    steps = {s["kind"]: s["details"] for s in transfers[0]["steps"]}
    assert steps["authorized"]["how"] == "signature"
    assert len(wallet.signed_typed_data) == 1
    # The wallet signed exactly the served typed data: its digest is the one the challenge recorded.
    assert wallet.digest(wallet.signed_typed_data[0]) == steps["challenge_issued"]["digest"]
    typed = json.loads(wallet.signed_typed_data[0])
    assert typed["message"]["to"] == bob.address and typed["message"]["value"] == str(25 * 10**17)
    community.wait_balance(bob, "2.5")
    expect(page.locator("#recent li").first).to_contain_text("\u22122.5 ENC to")  # a minus sign

    # Buy: the wallet moved to another network meanwhile; the signing dialog switches it back.
    wallet.chain_id = 1
    slot = community.open_slots()[-1]
    community.sell_at_floor(seller, slot, 150)
    page.get_by_role("link", name="Market").click()
    expect(page.locator("#slot")).to_have_value(js_time(slot))  # opens where the book has activity
    expect(page.locator("#book")).to_contain_text("150 Wh")
    page.get_by_label("Quantity (Wh)").fill("150")
    page.locator("#price-suggestion").get_by_role("button", name="Use").click()
    wallet.reject_next("eth_signTypedData_v4")
    page.get_by_role("button", name="Place order").click()
    dialog = page.get_by_role("dialog", name="Sign the escrow")
    expect(dialog.locator("[data-field=what]")).to_contain_text("in escrow")
    dialog.get_by_role("button", name="Sign in wallet").click()
    expect(page.locator("#order-message")).to_contain_text("No coins are locked")
    page.get_by_role("button", name="Place order").click()
    dialog.get_by_role("button", name="Sign in wallet").click()
    expect(page.get_by_text("Order placed")).to_be_visible(timeout=30_000)
    expect(page.locator("#my-orders tbody tr").first).to_contain_text("filled", timeout=45_000)
    assert wallet.chain_id == coin["chain_id"]
    orders = community.http.get("/api/v1/orders", headers=kim.headers).json()["items"]
    assert [(o["side"], o["quantity_wh"], o["status"]) for o in orders] == [("buy", 150, "filled")]
    # locked with the trade's record, in the pass after the match
    assert orders[0]["escrow_status"] in ("authorized", "locking", "locked", "released"), orders[0]
    screenshots(page, "market-linked")

    page.get_by_role("link", name="Trades").click()
    trade = page.locator("#trades tbody tr").first
    expect(trade).to_contain_text("150 Wh")
    expect(trade).to_contain_text("recorded 0x", timeout=30_000)  # the trade's transaction on chain


def test_a_rejected_connection_or_switch_is_explained_and_nothing_is_linked(
    new_page: NewPage, community: Community
) -> None:
    kim = community.register("consumer", "Kim")
    page = new_page()
    wallet = wallet_for(page, community)
    log_in(page, community.base, kim.email)
    wallet.reject_next("eth_requestAccounts")
    page.get_by_role("button", name="Connect Test Wallet").click()
    expect(page.locator(".wallet-message")).to_contain_text("You rejected the request in your wallet.")
    expect(page.locator("#connected-address")).to_have_count(0)

    page.get_by_role("button", name="Connect Test Wallet").click()
    expect(page.locator("#connected-address")).to_have_text(wallet.address.lower())
    wallet.reject_next("wallet_switchEthereumChain")
    page.get_by_role("button", name="Switch to ESSX local chain (anvil)").click()
    expect(page.locator(".wallet-message")).to_contain_text("You rejected the request in your wallet.")
    expect(page.locator("#wallet-chain")).to_have_attribute("data-ok", "false")
    expect(page.get_by_role("button", name="Link this wallet")).to_have_count(0)  # not on the wrong chain

    page.get_by_role("button", name="Switch to ESSX local chain (anvil)").click()
    expect(page.locator("#wallet-chain")).to_have_attribute("data-ok", "true")
    wallet.reject_next("personal_sign")
    page.get_by_role("button", name="Link this wallet").click()
    expect(page.locator(".wallet-message")).to_contain_text("You rejected the request in your wallet.")
    r = community.http.get("/api/v1/wallets/me", headers=kim.headers)
    assert r.status_code == 404  # nothing linked
    assert wallet.requests("wallet_addEthereumChain")  # the chain was added once, then switched to


def test_several_wallets_are_discovered_and_the_chosen_one_is_linked(
    new_page: NewPage, community: Community
) -> None:
    kim = community.register("consumer", "Kim")
    page = new_page()
    first = wallet_for(page, community, name="Wallet One", rdns="org.example.one", color="d98e04")
    second = wallet_for(page, community, name="Wallet Two", rdns="org.example.two", inject=False)
    log_in(page, community.base, kim.email)
    expect(page.get_by_text("Choose the wallet to use:")).to_be_visible()
    buttons = page.locator("#browser-wallet [data-wallet]")
    expect(buttons).to_have_count(2)  # window.ethereum is Wallet One, announced too: listed once
    expect(buttons.first.locator("img.wallet-icon")).to_have_attribute("src", re.compile("^data:image/svg"))
    screenshots(page, "wallet-choose")
    connect_switch_and_link(page, second, community)
    linked = community.http.get("/api/v1/wallets/me", headers=kim.headers).json()
    assert linked["address"] == second.address
    assert first.calls == []  # the other wallet was never asked anything
