"""The dashboard in a real browser against a real `essx run`: what a prosumer and an operator do.

Each test arranges what it does not exercise through the public API (accounts, funding) and drives the
rest through the page. Screenshots of the main views go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import PASSWORD, PIN, Account, Community, js_time, log_in, screenshot, screenshots

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

NewPage = Callable[..., "Page"]

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="browser tests need the Python package `playwright` (pip install -e '.[dev]')",
)
expect = sync_api.expect
# chromium drives the dashboard of a real `essx run` child process
pytestmark = [pytest.mark.browser, pytest.mark.process]

OPERATOR = ("operator@example.com", "long-password-1")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT")


def test_register_create_wallet_and_watch_the_balance_change(new_page: NewPage, community: Community) -> None:
    page = new_page(expect_failed=("/api/v1/users/me",))  # the 401 of the expired token below
    page.goto(f"{community.base}/")
    expect(page.get_by_role("heading", name="Log in to ESSX")).to_be_visible()
    screenshot(page, "login")
    page.get_by_role("link", name="Create an account").click()
    email = f"pat-{uuid.uuid4().hex[:6]}@example.com"
    page.get_by_label("Name").fill("Pat")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("prosumer").check()
    page.get_by_role("button", name="Create account").click()

    expect(page.get_by_role("heading", name="Create your wallet")).to_be_visible()
    expect(page.get_by_text("waiting for an operator")).to_be_visible()
    page.get_by_label("Choose a PIN").fill(PIN)
    page.get_by_label("Repeat the PIN").fill(PIN)
    page.get_by_role("button", name="Create wallet").click()

    balance = page.locator("#balance")
    expect(balance).to_have_text("0 ENC")
    address = page.locator("#address").inner_text()
    community.mint(address, "12.5")  # in the background, through the API: the page is not reloaded
    expect(balance).to_have_text("12.5 ENC", timeout=30_000)
    # A mint is no transfer of ours, but the chain index shows it: "Recent transfers" is not left empty.
    expect(page.locator("#recent li").first).to_contain_text("+12.5 ENC issued by ESSX", timeout=15_000)
    screenshot(page, "wallet")

    page.get_by_role("link", name="Energy").click()
    expect(page.get_by_role("heading", name="No sites yet")).to_be_visible()

    # An access token that no longer works is refreshed once with the refresh token, and the page goes on.
    page.evaluate(
        """() => {
            const t = JSON.parse(sessionStorage.getItem('essx.tokens'));
            sessionStorage.setItem('essx.tokens', JSON.stringify({ ...t, access: 'expired' }));
        }"""
    )
    page.reload()  # nothing else runs meanwhile: a refresh cut short by navigation would burn the token
    page.get_by_role("link", name="Wallet").click()
    expect(balance).to_have_text("12.5 ENC")
    assert page.evaluate("JSON.parse(sessionStorage.getItem('essx.tokens')).access") != "expired"

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to ESSX")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('essx.tokens')") is None


def test_send_coins_with_a_pin_until_the_timeline_is_confirmed(
    new_page: NewPage, community: Community
) -> None:
    sam = community.register("prosumer", "Sam", wallet=True)
    community.approve(sam)
    bob = community.register("consumer", "Bob", wallet=True)
    assert sam.address and bob.address
    community.mint(sam.address, "10")
    community.wait_balance(sam, "10")

    page = new_page()
    log_in(page, community.base, sam.email)
    balance = page.locator("#balance")
    expect(balance).to_have_text("10 ENC")
    page.get_by_label("To", exact=True).fill(bob.address)
    page.get_by_label("Amount (ENC)").fill("2.5")
    page.get_by_label("Memo (optional)").fill("solar share")
    page.get_by_role("button", name="Send", exact=True).click()

    dialog = page.get_by_role("dialog", name="Authorize transfer")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Wallet PIN").fill(PIN)
    dialog.get_by_role("button", name="Authorize").click()
    expect(dialog).to_have_count(0)

    progress = page.locator("#send-progress [data-status]")
    expect(progress).to_have_attribute("data-status", "confirmed", timeout=45_000)
    steps = page.locator("#send-progress li.done").evaluate_all("els => els.map(e => e.dataset.step)")
    for step in ("requested", "challenge_issued", "authorized", "signed", "submitted", "mined", "confirmed"):
        assert step in steps, steps
    expect(balance).to_have_text("7.5 ENC", timeout=15_000)

    recent = page.locator("#recent li").first
    expect(recent).to_contain_text("2.5 ENC")
    recent.locator("summary").click()
    expect(recent.locator("li[data-step=confirmed]")).to_be_visible()
    screenshot(page, "send-confirmed")
    community.wait_balance(bob, "2.5")

    receiver = new_page()
    log_in(receiver, community.base, bob.email)
    incoming = receiver.locator("#recent > ul > li")
    expect(incoming).to_have_count(1, timeout=15_000)  # the transfer, not again as its chain event
    expect(incoming.first).to_contain_text("+2.5 ENC from")
    expect(incoming.first).to_contain_text("confirmed")


def test_operator_approves_a_user_issues_coins_and_reads_the_audit_log(
    new_page: NewPage, community: Community
) -> None:
    quinn = community.register("prosumer", "Quinn", wallet=True)
    assert quinn.address
    before = community.mint(quinn.address, "1.25")  # through the API, before the page is opened
    page = new_page()
    log_in(page, community.base, *OPERATOR)
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    row = page.locator("#pending-users tr", has_text=quinn.email)
    expect(row).to_be_visible()
    screenshot(page, "admin-users")
    row.get_by_role("button", name="Approve Quinn").click()
    expect(page.locator("#status")).to_contain_text("Quinn is approved")
    expect(row).to_have_count(0)
    expect(page.locator("#all-users tr", has_text=quinn.email)).to_contain_text("approved")

    page.get_by_role("link", name="Coin").click()
    page.get_by_label("To", exact=True).fill(str(quinn.user_id))
    page.get_by_label("Amount (ENC)").fill("4")
    page.get_by_role("button", name="Issue coins").click()
    expect(page.locator("#coin-ops [data-status=confirmed]")).to_have_count(1, timeout=30_000)
    expect(page.locator("#total-supply")).not_to_have_text("0 ENC")
    # The history comes from the chain index: the mint made before this page, and the one made here.
    history = page.locator("#coin-history tbody tr")
    expect(history.filter(has_text="1.25 ENC")).to_contain_text("e2e", timeout=15_000)
    expect(history.filter(has_text="1.25 ENC")).to_contain_text(before["tx_hash"][:8])
    expect(history.first).to_contain_text("4 ENC", timeout=15_000)
    screenshots(page, "admin-coin")
    community.wait_balance(quinn, "5.25")

    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("#audit-integrity")).to_have_attribute("data-intact", "true")
    expect(page.locator("#audit")).to_contain_text("user.approve")
    screenshot(page, "admin-audit")

    if "/api/v1/ledger/slots/{slot_start}" in community.paths():
        page.get_by_role("link", name="Ledger").click()
        expect(page.locator("#ledger")).to_contain_text("anchored")

    if "/api/v1/sites" in community.paths():
        page.get_by_role("link", name="Sites").click()
        expect(page.locator("#sites-summary")).to_contain_text("sites")
        screenshot(page, "admin-sites")


def test_site_charts_update_live(new_page: NewPage, community: Community, seller: Account) -> None:
    page = new_page()
    log_in(page, community.base, seller.email)
    page.get_by_role("link", name="Energy").click()
    panel = page.locator("[data-site]")
    expect(panel.get_by_role("heading", name="Lee's roof")).to_be_visible()
    stats = panel.locator("dl.stats")
    expect(stats).to_have_attribute("data-ts", TIMESTAMP, timeout=20_000)
    first = stats.get_attribute("data-ts")
    # The collector polls every second and the page every five: the newest reading moves on by itself.
    page.wait_for_function(
        "first => document.querySelector('[data-site] dl.stats').dataset.ts !== first",
        arg=first,
        timeout=20_000,
    )
    assert int(panel.get_attribute("data-readings") or 0) >= 2
    expect(panel.locator("canvas").first).to_be_visible()
    expect(panel.locator(".u-legend")).to_contain_text("PV")
    expect(panel.get_by_text("Today (UTC)")).to_be_visible()
    # The load line is dashed and drawn over the battery's: equal values no longer hide it.
    load = panel.locator(".u-legend .u-series", has_text="Load")
    assert load.locator(".u-marker").evaluate("m => getComputedStyle(m).borderStyle") == "dashed"
    order = panel.locator(".u-legend .u-series .u-label").evaluate_all("els => els.map((e) => e.textContent)")
    assert order.index("Load") > order.index("Battery (+ discharge)"), order
    # Energy flowing now is counted now: the running slot from the meter counters, before any slot closes.
    expect(panel.locator("[data-energy=today-load_wh]")).not_to_have_text("0 Wh", timeout=30_000)
    expect(panel.locator(f"#running-note-{seller.site_id}")).to_contain_text("running slot")
    assert_time_labels_apart(panel)
    screenshots(page, "energy")

    phone = new_page(390, 844)
    log_in(phone, community.base, seller.email)
    phone.get_by_role("link", name="Energy").click()
    expect(phone.locator("[data-site] dl.stats")).to_have_attribute("data-ts", TIMESTAMP, timeout=20_000)
    phone.locator("[data-site] canvas").first.wait_for()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the energy page scrolls sideways on a phone ({width}px)"
    assert_time_labels_apart(phone.locator("[data-site]"))
    screenshot(phone, "energy-phone")


def assert_time_labels_apart(panel: Locator) -> None:
    """The chart's time labels, as uPlot drew them, do not touch: each pair of neighbours is further
    apart than half their widths (measured in the axis font)."""
    drawn = panel.locator(".chart").evaluate(
        """(el) => {
            const u = el.uplot, ax = u.axes[0];
            const ctx = document.createElement('canvas').getContext('2d');
            ctx.font = ax.font[0];
            const ticks = ax._splits
              .map((v, i) => [u.valToPos(v, 'x', true), ax._values[i]])
              .filter(([, t]) => t != null && t !== '');
            const width = (t) => Math.max(...String(t).split('\\n').map((l) => ctx.measureText(l).width));
            const gaps = ticks.slice(1).map(([x, t], i) => x - ticks[i][0] - (width(t) + width(ticks[i][1])) / 2);
            return { labels: ticks.map(([, t]) => String(t)), gap: Math.min(...gaps) };
        }"""
    )
    assert len(drawn["labels"]) >= 2, drawn
    assert all("\n" not in t for t in drawn["labels"]), drawn  # one line per tick
    assert drawn["gap"] > 0, f"time labels overlap: {drawn}"


def test_buy_at_the_suggested_price_and_follow_the_trade(
    new_page: NewPage, community: Community, seller: Account
) -> None:
    paths = community.paths()
    if "/api/v1/orders" not in paths or "/api/v1/market/book" not in paths:
        pytest.skip("the market API (POST /api/v1/orders, GET /api/v1/market/book, issue 5) is not there yet")
    kim = community.register("consumer", "Kim", wallet=True)
    assert kim.address
    community.mint(kim.address, "1000")
    community.wait_balance(kim, "1000")

    page = new_page()
    log_in(page, community.base, kim.email)
    page.get_by_role("link", name="Market").click()
    expect(page.get_by_role("heading", name="Order book")).to_be_visible()
    # The second open slot: the first one's gate may close while the test runs.
    slot = page.locator("#slot option").nth(1).get_attribute("value")
    assert slot
    page.get_by_label("Delivery slot").select_option(slot)
    community.sell_at_floor(seller, slot, 200)
    expect(page.locator("#book")).to_contain_text("200 Wh", timeout=10_000)  # the ask, without its seller

    page.get_by_label("Quantity (Wh)").fill("200")
    suggestion = page.locator("#price-suggestion")
    expect(suggestion).to_contain_text("Suggested")
    suggestion.get_by_role("button", name="Use").click()
    assert page.get_by_label("Limit price (ENC/kWh)").input_value()
    page.get_by_role("button", name="Place order").click()
    dialog = page.get_by_role("dialog", name="Authorize escrow")
    dialog.get_by_label("Wallet PIN").fill(PIN)
    dialog.get_by_role("button", name="Authorize").click()
    expect(page.get_by_text("Order placed")).to_be_visible(timeout=30_000)
    order = page.locator("#my-orders tbody tr").first
    expect(order).to_contain_text("filled", timeout=30_000)  # matched with the seller's ask
    screenshot(page, "market")

    screenshots(page, "market")  # "My orders" is not cut off on a phone

    page.get_by_role("link", name="Trades").click()
    trade = page.locator("#trades tbody tr").first
    expect(trade).to_contain_text("200 Wh")
    expect(trade).to_contain_text("buy")
    screenshot(page, "trades")
    screenshots(page, "trades")  # all columns visible at 1280 px

    if "/api/v1/statements" in paths:
        page.get_by_role("link", name="Statements").click()
        expect(page.locator("#statement-pending")).to_contain_text("200 Wh")  # contracted, not yet settled
        expect(page.locator("#statement-settled")).to_contain_text("0 Wh")
        page.locator(".chart canvas").first.wait_for()
        screenshot(page, "statements")

        # The seller before settlement: nothing received or earned yet, the expected income apart.
        lee = new_page()
        log_in(lee, community.base, seller.email)
        lee.get_by_role("link", name="Statements").click()
        settled = lee.locator("#statement-settled")
        expect(settled).to_contain_text("Coins received0 ENC")
        expect(settled).to_contain_text("Earned over the feed-in price0 ENC")
        expect(lee.locator("#statement-pending")).to_contain_text("Expected income")
        screenshots(lee, "statements-seller")

    # A consumer's Energy page: what they can do, not a site form the API would refuse.
    page.get_by_role("link", name="Energy").click()
    expect(page.get_by_role("heading", name="Your energy comes from your neighbours")).to_be_visible()
    expect(page.locator("#consumer-energy")).to_contain_text("Waiting for settlement")
    expect(page.get_by_text("Register a site")).to_have_count(0)
    expect(page.get_by_role("link", name="Buy energy on the Market page")).to_be_visible()
    screenshots(page, "energy-consumer")

    if "/api/v1/admin/market/summary" in paths:
        admin = new_page()
        log_in(admin, community.base, *OPERATOR)
        admin.get_by_role("link", name="Market").click()
        # The day's totals hold every trade of the package's tests; this one is its slot's row.
        expect(admin.locator("#market-totals")).to_contain_text("Pending settlement")
        expect(admin.locator("#market-summary tbody tr", has_text="200 Wh")).to_have_count(1)
        screenshot(admin, "admin-market")
        screenshots(admin, "admin-market")


def test_the_market_opens_on_my_order_with_one_band_and_errors_in_coins(
    new_page: NewPage, community: Community
) -> None:
    if "/api/v1/orders" not in community.paths():
        pytest.skip("the market API is not there yet")
    sue = community.register("consumer", "Sue", wallet=True)
    assert sue.address
    community.mint(sue.address, "100")
    community.wait_balance(sue, "100")
    slot = community.open_slots()[-1]  # not the first open slot: the page must find it
    book = community.http.get("/api/v1/market/book", params={"slot_start": slot}).json()
    r = community.http.post(
        "/api/v1/orders",
        json={"side": "buy", "slot_start": slot, "quantity_wh": 100, "limit_price": book["floor"]},
        headers={**sue.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    r = community.http.post(
        f"/api/v1/orders/{r.json()['id']}/authorize", json={"pin": PIN}, headers=sue.headers
    )
    assert r.status_code == 200, r.text

    page = new_page(expect_failed=("/api/v1/orders",))  # the refused order below
    log_in(page, community.base, sue.email)
    page.get_by_role("link", name="Market").click()
    expect(page.locator("#slot")).to_have_value(js_time(slot))
    expect(page.locator("#book")).to_contain_text("100 Wh")

    # One band, the book's; the suggestion in whole cents, explained by the buyer's own tariff tier.
    expect(page.locator("#price-band")).to_contain_text(
        f"{book['floor']} (feed-in price) to {book['ceiling']}"
    )
    expect(page.locator("#suggested-price")).to_have_text(re.compile(r"^\d+(\.\d{1,2})? ENC/kWh$"))
    expect(page.locator("#your-tier")).to_contain_text("(tier 1,")
    assert "Band" not in page.locator("#price-suggestion").inner_text()

    page.get_by_label("Quantity (Wh)").fill("10")
    page.get_by_label("Limit price (ENC/kWh)").fill("1")
    page.get_by_role("button", name="Place order").click()
    refused = page.locator("#order-message")
    expect(refused).to_contain_text(f"from the feed-in price {book['floor']} to the top retail tariff")
    expect(refused).to_contain_text("coins per kWh")
    assert "000000000" not in refused.inner_text()
    screenshots(page, "market-my-order")


def test_a_consumer_turns_automatic_trading_on_and_off(new_page: NewPage, community: Community) -> None:
    sam = community.register("consumer", "Sam", wallet=True)
    community.mint(sam.address or "", "100")
    community.wait_balance(sam, "100")
    page = new_page()
    log_in(page, community.base, sam.email)
    page.get_by_role("link", name="Auto-trading").click()
    expect(page.get_by_role("heading", name="Automatic trading")).to_be_visible()
    page.get_by_label("Expected use per slot (Wh)").fill("200")
    page.get_by_label("Spending limit per day (ENC)").fill("50")
    page.get_by_role("button", name="Enable").click()
    page.get_by_label("Wallet PIN").fill(PIN)
    page.get_by_role("button", name="Authorize").click()
    expect(page.locator("#profile-title")).to_contain_text("enabled")
    # the agent runs in the market loop every few seconds: its first orders show in the activity list
    expect(page.locator("#agent-activity")).to_contain_text("placed", timeout=40_000)
    expect(page.locator("#agent-activity")).to_contain_text("your expected use of 200 Wh per slot")
    screenshot(page, "trading")
    page.get_by_role("button", name="Turn off").click()
    expect(page.locator("#profile-title")).to_contain_text("off")
    expect(page.locator("#agent-activity")).to_contain_text("revoked by you", timeout=15_000)
