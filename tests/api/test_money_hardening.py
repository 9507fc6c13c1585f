"""The money paths under attack: parallel authorisations, hostile amounts, addresses and `to` values,
what a recipient sees, other users' sites, and Idempotency-Keys after a 500 (issue 12)."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.coin.models import CoinOperation
from app.context import Context
from app.core.security import utcnow
from app.idempotency.models import IdempotencyRecord
from app.market.models import Order
from app.market.service import rules
from app.transfers.models import Transfer
from app.wallets.models import Wallet
from tests.api.helpers import admin_headers, idem, login, parallel, register
from tests.api.wallet_helpers import (
    PIN,
    fund,
    user_with_custodial_wallet,
    user_with_linked_wallet,
    wait_final,
)
from tests.ess_collector.harness import site_row
from tests.polling import wait_until
from wallet.models import OutgoingTx

COIN = 10**18
GOOD = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
WRONG_CHECKSUM = GOOD[:-1] + "c"  # mixed case, one letter's case flipped


@pytest.fixture
def slot(ctx: Context) -> str:
    r = rules(ctx)
    return (r.slot_of(utcnow()) + 2 * r.slot).isoformat()


def _send(client: TestClient, headers: dict[str, str], to: object, amount: object) -> Any:
    return client.post("/api/v1/transfers", json={"to": to, "amount": amount}, headers={**headers, **idem()})


def _sign(account: Any, typed: dict[str, Any]) -> str:
    return str(account.sign_message(encode_typed_data(full_message=typed)).signature.hex())


# -- 1. reservations: what is authorised but not mined cannot be spent again ---------------------------


def test_parallel_authorisations_spend_a_balance_once(client: TestClient, ctx: Context) -> None:
    """5 coins, 20 transfers of 5 authorised at once: one passes, 19 get 422, one is relayed."""
    admin = admin_headers(client, ctx)
    _u, headers, account = user_with_linked_wallet(client)
    fund(client, admin, account.address, "5")
    to = Account.create().address
    created = [_send(client, headers, to, "5") for _ in range(20)]
    assert all(r.status_code == 201 for r in created), [r.text for r in created]
    transfers = [r.json() for r in created]
    signed = [(t["id"], _sign(account, t["challenge"]["typed_data"])) for t in transfers]
    answers = parallel(
        [
            lambda tid=tid, sig=sig: client.post(
                f"/api/v1/transfers/{tid}/authorize", json={"signature": sig}, headers=headers
            )
            for tid, sig in signed
        ]
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [422] * 19, [r.text for r in answers]
    refused = [r.json() for r in answers if r.status_code == 422]
    assert {e["error"] for e in refused} == {"InsufficientBalance"}
    assert "needs 5 coins" in refused[0]["detail"] and "0 available" in refused[0]["detail"]
    winner = next(r.json()["id"] for r in answers if r.status_code == 200)
    assert wait_final(client, headers, winner)["status"] == "confirmed"
    assert ctx.coin.functions.balanceOf(to).call() == 5 * COIN
    assert ctx.coin.functions.balanceOf(account.address).call() == 0
    with Session(ctx.engine) as s:
        rows = s.exec(select(Transfer).where(col(Transfer.from_address) == account.address)).all()
        assert sorted(t.status for t in rows) == ["confirmed"] + ["pending_authorization"] * 19
        assert [t.id for t in rows if t.tx_id is not None] == [winner]  # only one was relayed
        batches = s.exec(select(OutgoingTx).where(col(OutgoingTx.purpose) == "transfer_batch")).all()
        assert len(batches) == 1 and batches[0].status == "confirmed"


def test_parallel_pin_authorisations_spend_a_balance_once(client: TestClient, ctx: Context) -> None:
    """A custodial wallet: 5 coins, 10 transfers of 5 authorised with the PIN at once. The right PIN's
    record holds the wallet's lock through the balance check: one passes, 9 get 422, and the right PINs
    leave no failed attempt behind."""
    admin = admin_headers(client, ctx)
    _u, headers, address = user_with_custodial_wallet(client)
    fund(client, admin, address, "5")
    to = Account.create().address
    created = [_send(client, headers, to, "5") for _ in range(10)]
    assert all(r.status_code == 201 for r in created), [r.text for r in created]
    answers = parallel(
        [
            lambda tid=r.json()["id"]: client.post(
                f"/api/v1/transfers/{tid}/authorize", json={"pin": PIN}, headers=headers
            )
            for r in created
        ]
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [422] * 9, [r.text for r in answers]
    assert {r.json()["error"] for r in answers if r.status_code == 422} == {"InsufficientBalance"}
    winner = next(r.json()["id"] for r in answers if r.status_code == 200)
    assert wait_final(client, headers, winner)["status"] == "confirmed"
    assert ctx.coin.functions.balanceOf(to).call() == 5 * COIN
    with Session(ctx.engine) as s:
        assert s.exec(select(Wallet.pin_failures).where(col(Wallet.address) == address)).one() == 0


def test_a_transfer_and_an_escrow_compete_for_the_same_coins(
    client: TestClient, ctx: Context, slot: str, manual_mining: None
) -> None:
    """5 coins, a transfer and a buy order's escrow of 5 each, authorised at once: one passes. Until it is
    mined (or, for the escrow, until the order matches) the chain balance has not moved, and still the coins
    stay reserved for it."""
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    ctx.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    fund(client, admin, addr, "5")
    ctx.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    to = Account.create().address
    buy = {"side": "buy", "slot_start": slot, "quantity_wh": 25, "limit_price": "200"}  # escrow: 5 coins

    def place() -> dict[str, Any]:
        r = client.post("/api/v1/orders", json=buy, headers={**headers, **idem()})
        assert r.status_code == 201 and r.json()["escrow_amount"] == "5", r.text
        return dict(r.json())

    transfers = [_send(client, headers, to, "5").json() for _ in range(2)]
    orders = [place(), place()]
    paths = [f"/api/v1/transfers/{t['id']}/authorize" for t in transfers] + [
        f"/api/v1/orders/{o['id']}/authorize" for o in orders
    ]

    def authorise(path: str) -> Any:
        return client.post(path, json={"pin": PIN}, headers=headers)

    answers = parallel([lambda: authorise(paths[0]), lambda: authorise(paths[2])])
    assert sorted(r.status_code for r in answers) == [200, 422], [r.text for r in answers]
    assert ctx.coin.functions.balanceOf(addr).call() == 5 * COIN  # nothing mined yet
    for path in paths:  # neither kind of spend gets past the reservation
        r = authorise(path)
        assert r.status_code in (409, 422), r.text
        assert r.status_code == 409 or r.json()["error"] == "InsufficientBalance", r.text
    with Session(ctx.engine) as s:
        authorised = [t for t in s.exec(select(Transfer)).all() if t.signature is not None]
        locked = [o for o in s.exec(select(Order)).all() if o.signature is not None]
        assert len(authorised) + len(locked) == 1
    if locked:  # the escrow won: it waits in the book, unlocked until it matches, the coins still reserved
        time.sleep(0.5)
        assert _pending_count(ctx) == 0 and locked[0].escrow_status == "authorized"
        assert authorise(paths[1]).json()["error"] == "InsufficientBalance"
        return
    assert wait_until(lambda: _pending_count(ctx) == 1)  # only the winning transfer was relayed
    ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert wait_until(lambda: ctx.coin.functions.balanceOf(addr).call() == 0)
    assert ctx.coin.functions.balanceOf(to).call() == 5 * COIN
    time.sleep(0.5)
    assert _pending_count(ctx) == 0


def _pending_count(ctx: Context) -> int:
    pool = ctx.w3.provider.make_request("txpool_status", [])  # type: ignore[arg-type]
    return int(pool["result"]["pending"], 16)


def test_a_double_authorisation_is_a_conflict_not_a_balance_error(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, account = user_with_linked_wallet(client)
    fund(client, admin, account.address, "5")
    t = _send(client, headers, Account.create().address, "5").json()
    sig = _sign(account, t["challenge"]["typed_data"])
    answers = parallel(
        [
            lambda: client.post(
                f"/api/v1/transfers/{t['id']}/authorize", json={"signature": sig}, headers=headers
            )
            for _ in range(4)
        ]
    )
    assert sorted(r.status_code for r in answers) == [200, 409, 409, 409], [r.text for r in answers]
    assert wait_final(client, headers, t["id"])["status"] == "confirmed"


# -- 2. amounts: one grammar -------------------------------------------------------------------------

BAD_AMOUNTS = [
    "+1",
    " 1 ",
    "1 ",
    ".5",
    "1.",
    "1_000",
    "1e3",
    "1E3",
    "\u0665",  # ARABIC-INDIC DIGIT FIVE
    "\uff15",  # FULLWIDTH DIGIT FIVE
    "1,5",
    "0x10",
    "-1",
    "",
    "NaN",
]


def test_amounts_outside_the_grammar_are_refused_everywhere(
    client: TestClient, ctx: Context, slot: str
) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "100")
    supply = ctx.coin.functions.totalSupply().call()
    for amount in [*BAD_AMOUNTS, "1.0000000000000000001", "9" * 200, 5, 1.5, None]:
        answers = {
            "transfer": _send(client, headers, GOOD, amount),
            "mint": client.post(
                "/api/v1/admin/coin/mint", json={"to": GOOD, "amount": amount}, headers={**admin, **idem()}
            ),
            "burn": client.post(
                "/api/v1/admin/coin/burn", json={"amount": amount}, headers={**admin, **idem()}
            ),
            "order": client.post(
                "/api/v1/orders",
                json={"side": "buy", "slot_start": slot, "quantity_wh": 100, "limit_price": amount},
                headers={**headers, **idem()},
            ),
        }
        for route, r in answers.items():
            assert r.status_code == 422, (route, amount, r.text)
            if isinstance(amount, str):
                assert r.json()["error"] == "InvalidAmount", (route, amount, r.text)
    assert ctx.coin.functions.totalSupply().call() == supply
    assert client.get("/api/v1/transfers", headers=headers).json()["items"] == []
    assert client.get("/api/v1/orders", headers=headers).json()["items"] == []
    # the grammar's own examples pass
    assert _send(client, headers, GOOD, "007.50").status_code == 201
    assert _send(client, headers, GOOD, "0.000000000000000001").status_code == 201


# -- 3. addresses: one parser, everywhere an address enters ----------------------------------------

BAD_ADDRESSES = [
    WRONG_CHECKSUM,
    GOOD[2:].lower(),  # no 0x
    "0X" + GOOD[2:].lower(),
    " " + GOOD,
    GOOD + "\n",
    GOOD[:-1],
    "0x" + "g" * 40,
]


def test_bad_addresses_are_refused_on_every_route(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    fresh = login(client, register(client, "consumer")["email"])  # for the link routes: no wallet yet
    supply = ctx.coin.functions.totalSupply().call()
    for bad in BAD_ADDRESSES:
        answers = {
            "transfer": _send(client, headers, bad, "0.1"),
            "mint": client.post(
                "/api/v1/admin/coin/mint", json={"to": bad, "amount": "1"}, headers={**admin, **idem()}
            ),
            "burn": client.post(
                "/api/v1/admin/coin/burn", json={"from": bad, "amount": "1"}, headers={**admin, **idem()}
            ),
            "link challenge": client.post(
                "/api/v1/wallets/link/challenge", json={"address": bad}, headers=fresh
            ),
            "link": client.post(
                "/api/v1/wallets/link",
                json={"address": bad, "message": "x", "signature": "0x00"},
                headers=fresh,
            ),
            "balance": client.get(f"/api/v1/accounts/{quote(bad, safe='')}/balance"),
            "account transfers": client.get(
                f"/api/v1/accounts/{quote(bad, safe='')}/transfers", headers=headers
            ),
        }
        for route, r in answers.items():
            assert r.status_code == 422 and r.json()["error"] == "InvalidAddress", (route, bad, r.text)
    assert ctx.coin.functions.totalSupply().call() == supply
    assert client.get("/api/v1/transfers", headers=headers).json()["items"] == []
    # every accepted spelling is normalised to the checksum form
    for good in (GOOD, GOOD.lower(), "0x" + GOOD[2:].upper()):
        r = client.get(f"/api/v1/accounts/{good}/balance")
        assert r.status_code == 200 and r.json()["address"] == GOOD, r.text


# -- 4. and 5. `to` naming a user ---------------------------------------------------------------------


def test_to_values_that_int_or_the_database_refuse_are_4xx(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    for to in [
        "²",
        "\u0661\u0662",
        "\uff11",
        "+5",
        " 5",
        "5 ",
        "-5",
        "0",
        0,
        -1,
        2**31,
        2**63,
        2**64,
        2**70,
        str(2**64),
        True,
        1.0,
    ]:
        for r in (
            _send(client, headers, to, "0.1"),
            client.post(
                "/api/v1/admin/coin/mint", json={"to": to, "amount": "1"}, headers={**admin, **idem()}
            ),
            client.post(
                "/api/v1/admin/coin/burn", json={"from": to, "amount": "1"}, headers={**admin, **idem()}
            ),
        ):
            assert r.status_code == 422 and r.json()["error"] in ("InvalidAddress", "ValidationError"), (
                to,
                r.text,
            )
    assert client.get("/api/v1/transfers", headers=headers).json()["items"] == []


def test_transfers_do_not_tell_which_user_ids_exist(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    no_wallet = register(client, "consumer")["id"]
    missing = no_wallet + 1000
    answers = []
    for uid in (no_wallet, missing):
        for to in (uid, str(uid)):
            r = _send(client, headers, to, "0.1")
            answers.append((r.status_code, r.json()["error"], r.json()["detail"].replace(str(uid), "N")))
    assert len(set(answers)) == 1 and answers[0][0] == 404, answers


# -- 6. the recipient sees a transfer only once it is authorised ------------------------------------


def test_the_recipient_sees_a_transfer_only_once_authorised(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _s, s_headers, s_addr = user_with_custodial_wallet(client)
    receiver, r_headers, _r_addr = user_with_custodial_wallet(client)
    fund(client, admin, s_addr, "1")
    t = _send(client, s_headers, receiver["id"], "1").json()
    unfunded = _send(client, s_headers, receiver["id"], "1").json()

    def seen() -> tuple[int, list[str], list[str]]:
        one = client.get(f"/api/v1/transfers/{t['id']}", headers=r_headers).status_code
        listed = [i["id"] for i in client.get("/api/v1/transfers", headers=r_headers).json()["items"]]
        incoming = [
            i["id"] for i in client.get("/api/v1/transfers?direction=in", headers=r_headers).json()["items"]
        ]
        return one, listed, incoming

    assert seen() == (404, [], [])
    assert client.get(f"/api/v1/transfers/{unfunded['id']}", headers=r_headers).status_code == 404
    r = client.post(f"/api/v1/transfers/{t['id']}/authorize", json={"pin": PIN}, headers=s_headers)
    assert r.status_code == 200, r.text
    assert seen() == (200, [t["id"]], [t["id"]])
    # the other one could not be authorised (the coins are taken): it stays the sender's draft
    r = client.post(f"/api/v1/transfers/{unfunded['id']}/authorize", json={"pin": PIN}, headers=s_headers)
    assert r.status_code == 422
    assert client.get(f"/api/v1/transfers/{unfunded['id']}", headers=r_headers).status_code == 404
    assert wait_final(client, r_headers, t["id"])["status"] == "confirmed"
    sender_view = [i["id"] for i in client.get("/api/v1/transfers", headers=s_headers).json()["items"]]
    assert sorted(sender_view) == sorted([t["id"], unfunded["id"]])


# -- 7. a buy order naming another user's site -------------------------------------------------------


def test_a_buy_order_naming_another_users_site_reads_like_a_missing_site(
    client: TestClient, ctx: Context, slot: str
) -> None:
    admin = admin_headers(client, ctx)
    owner = register(client, "prosumer")
    with Session(ctx.engine) as s:
        site = site_row(owner["id"], "127.0.0.1", 1, name="roof", enabled=False)
        s.add(site)
        s.commit()
        theirs = site.id or 0
    _b, buyer, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "100")
    answers = []
    for site_id in (theirs, theirs + 1000, 2**31 - 1):  # beyond the id column: 422, test_input_bounds
        body = {
            "side": "buy",
            "slot_start": slot,
            "quantity_wh": 100,
            "limit_price": "200",
            "site_id": site_id,
        }
        r = client.post("/api/v1/orders", json=body, headers={**buyer, **idem()})
        answers.append((r.status_code, r.json()["error"], r.json()["detail"].replace(str(site_id), "N")))
    assert len(set(answers)) == 1 and answers[0][:2] == (404, "NotFound"), answers
    assert client.get("/api/v1/orders", headers=buyer).json()["items"] == []


# -- 8. an Idempotency-Key after a 500 ---------------------------------------------------------------


def _fail_once(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> list[int]:
    """Makes `target.name` raise RuntimeError on its first call only; returns the list of calls."""
    original = getattr(target, name)
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, flaky)
    return calls


def _key_state(ctx: Context, key: str) -> list[tuple[str, str | None]]:
    with Session(ctx.engine) as s:
        rows = s.exec(select(IdempotencyRecord).where(col(IdempotencyRecord.key) == key)).all()
        return [(r.state, r.resource) for r in rows]


def test_a_transfer_create_that_failed_with_500_is_retried_at_once(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.transfers.service as transfers

    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    raw = TestClient(client.app, raise_server_exceptions=False)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    calls = _fail_once(monkeypatch, transfers, "typed_data_digest")
    body = {"to": GOOD, "amount": "0.5"}
    first = raw.post("/api/v1/transfers", json=body, headers={**headers, **key})
    assert first.status_code == 500 and calls == [1]
    assert _key_state(ctx, key["Idempotency-Key"]) == []  # nothing was started: the key is free
    retry = client.post("/api/v1/transfers", json=body, headers={**headers, **key})
    assert retry.status_code == 201, retry.text
    again = client.post("/api/v1/transfers", json=body, headers={**headers, **key})
    assert again.json()["id"] == retry.json()["id"]
    assert [i["id"] for i in client.get("/api/v1/transfers", headers=headers).json()["items"]] == [
        retry.json()["id"]
    ]


def test_an_order_create_that_failed_with_500_is_retried_at_once(
    client: TestClient, ctx: Context, slot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.market.service as market

    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "100")
    raw = TestClient(client.app, raise_server_exceptions=False)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    _fail_once(monkeypatch, market, "receive_with_authorization")
    body = {"side": "buy", "slot_start": slot, "quantity_wh": 100, "limit_price": "200"}
    assert raw.post("/api/v1/orders", json=body, headers={**headers, **key}).status_code == 500
    retry = client.post("/api/v1/orders", json=body, headers={**headers, **key})
    assert retry.status_code == 201, retry.text
    assert [o["id"] for o in client.get("/api/v1/orders", headers=headers).json()["items"]] == [
        retry.json()["id"]
    ]


def test_a_mint_that_failed_with_500_after_it_was_sent_is_resumed_not_repeated(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.coin.service as coin

    admin = admin_headers(client, ctx)
    raw = TestClient(client.app, raise_server_exceptions=False)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    holder = Account.create().address
    _fail_once(monkeypatch, coin, "to_public")  # fails after the operation and its transaction are stored
    body = {"to": holder, "amount": "3"}
    first = raw.post("/api/v1/admin/coin/mint", json=body, headers={**admin, **key})
    assert first.status_code == 500
    assert [state for state, _ in _key_state(ctx, key["Idempotency-Key"])] == ["in_progress"]
    retry = client.post("/api/v1/admin/coin/mint", json=body, headers={**admin, **key})
    assert retry.status_code == 200 and retry.json()["status"] == "confirmed", retry.text
    assert ctx.coin.functions.balanceOf(holder).call() == 3 * COIN  # minted once
    with Session(ctx.engine) as s:
        assert len(s.exec(select(CoinOperation).where(col(CoinOperation.account) == holder)).all()) == 1


def test_a_pause_that_failed_with_500_before_anything_was_sent_is_retried_at_once(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = admin_headers(client, ctx)
    raw = TestClient(client.app, raise_server_exceptions=False)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    _fail_once(monkeypatch, ctx.relayer, "prepare")
    assert raw.post("/api/v1/admin/coin/pause", json={}, headers={**admin, **key}).status_code == 500
    assert _key_state(ctx, key["Idempotency-Key"]) == []
    assert ctx.coin.functions.paused().call() is False
    retry = client.post("/api/v1/admin/coin/pause", json={}, headers={**admin, **key})
    assert retry.status_code == 200 and retry.json()["status"] == "confirmed", retry.text
    assert ctx.coin.functions.paused().call() is True
