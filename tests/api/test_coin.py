from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from web3 import Web3

from app.audit.models import AuditEntry
from app.coin.models import CoinOperation
from app.context import Context
from tests.api.helpers import admin_headers, idem, login, register
from wallet.models import OutgoingTx

# A fixed address: test ids are made from it, and pytest-xdist needs every worker to collect the same ids.
ALICE = Account.from_key(b"\xa1" * 32).address


def mint(
    client: TestClient, headers: dict[str, str], to: object, amount: object, key: dict[str, str] | None = None
):
    return client.post(
        "/api/v1/admin/coin/mint",
        json={"to": to, "amount": amount, "memo": "test"},
        headers={**headers, **(key or idem())},
    )


def test_admin_mint_shows_up_on_chain_and_in_the_index(client: TestClient, ctx: Context, w3: Web3) -> None:
    admin = admin_headers(client, ctx)
    r = mint(client, admin, ALICE, "12.5")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "confirmed" and body["block_number"] > 0 and body["tx_hash"].startswith("0x")
    # balanceOf read straight from the node, not through our API
    assert ctx.coin.functions.balanceOf(ALICE).call() == 12_500_000_000_000_000_000
    receipt = w3.eth.get_transaction_receipt(body["tx_hash"])
    assert receipt["status"] == 1
    assert client.get(f"/api/v1/accounts/{ALICE}/balance").json()["balance"] == "12.5"
    coin = client.get("/api/v1/coin").json()
    assert coin["decimals"] == 18 and coin["total_supply"] == "12.5" and coin["chain_id"] == 31337
    from app.indexer.service import catch_up

    catch_up(ctx)
    page = client.get(f"/api/v1/accounts/{ALICE}/transfers", headers=admin).json()
    assert [(t["value"], t["direction"], t["tx_hash"]) for t in page["items"]] == [
        ("12.5", "in", body["tx_hash"])
    ]
    audit = client.get("/api/v1/admin/audit", headers=admin).json()
    assert audit["chain_intact"]
    assert audit["items"][0]["action"] == "coin.mint" and audit["items"][0]["outcome"] == "confirmed"
    me = client.get("/api/v1/users/me", headers=admin).json()
    assert (audit["items"][0]["actor_id"], audit["items"][0]["actor_email"]) == (
        me["id"],
        "admin@example.com",
    )
    assert audit["items"][0]["details"]["amount"] == "12.5"


def test_idempotency_replays_rejects_other_body_and_requires_a_key(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    key = idem()
    first = mint(client, admin, ALICE, "1", key)
    again = mint(client, admin, ALICE, "1", key)
    assert again.status_code == 200 and again.json() == first.json()
    assert ctx.coin.functions.balanceOf(ALICE).call() == 10**18  # minted once
    other = mint(client, admin, ALICE, "2", key)
    assert other.status_code == 422 and other.json()["error"] == "IdempotencyKeyReused"
    r = client.post("/api/v1/admin/coin/mint", json={"to": ALICE, "amount": "1"}, headers=admin)
    assert r.status_code == 400 and r.json()["error"] == "MissingIdempotencyKey", r.text


@pytest.mark.parametrize(
    ("to", "amount", "error"),
    [
        (ALICE, "0", "InvalidAmount"),
        (ALICE, "-1", "InvalidAmount"),
        (ALICE, "0.0000000000000000001", "InvalidAmount"),
        (ALICE, "1e3", "InvalidAmount"),
        (ALICE, 5, "ValidationError"),  # a number, not a decimal string
        ("0x123", "1", "InvalidAddress"),
        (ALICE.lower()[:-1] + "Z", "1", "InvalidAddress"),
        (
            ALICE[:2] + ALICE[2:].swapcase() if ALICE[2:] != ALICE[2:].swapcase() else "0xAb",
            "1",
            "InvalidAddress",
        ),
        (99999, "1", "NotFound"),
    ],
)
def test_bad_mints_are_4xx_and_change_nothing(
    client: TestClient, ctx: Context, to: object, amount: object, error: str
) -> None:
    admin = admin_headers(client, ctx)
    supply = ctx.coin.functions.totalSupply().call()
    r = mint(client, admin, to, amount)
    assert 400 <= r.status_code < 500 and r.json()["error"] == error, r.text
    assert ctx.coin.functions.totalSupply().call() == supply
    with Session(ctx.engine) as s:
        assert s.exec(select(CoinOperation)).all() == []
        rejected = s.exec(select(AuditEntry)).all()
        # schema errors are refused before the route runs; everything else is audited as rejected
        assert [e.outcome for e in rejected] == ([] if error == "ValidationError" else ["rejected"])


def test_mint_to_user_without_wallet_is_a_clear_404(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    user = register(client, "consumer")
    r = mint(client, admin, user["id"], "1")
    assert r.status_code == 404 and "no wallet" in r.json()["detail"]


def test_non_admin_cannot_mint(client: TestClient, ctx: Context) -> None:
    register(client, "consumer", "c@example.com")
    r = mint(client, login(client, "c@example.com"), ALICE, "1")
    assert r.status_code == 403


def test_pause_blocks_minting_and_unpause_restores(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    r = client.post("/api/v1/admin/coin/pause", json={"memo": "maintenance"}, headers={**admin, **idem()})
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    assert ctx.coin.functions.paused().call() is True
    r = mint(client, admin, ALICE, "1")
    assert r.status_code == 409 and r.json()["error"] == "CoinPaused"
    r = client.post("/api/v1/admin/coin/pause", json={}, headers={**admin, **idem()})
    assert r.status_code == 409
    r = client.post("/api/v1/admin/coin/unpause", json={}, headers={**admin, **idem()})
    assert r.status_code == 200
    assert mint(client, admin, ALICE, "1").status_code == 200


def test_burn_from_treasury_and_over_balance(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    treasury = ctx.account.address
    assert mint(client, admin, treasury, "5").status_code == 200
    r = client.post("/api/v1/admin/coin/burn", json={"amount": "2"}, headers={**admin, **idem()})
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    assert ctx.coin.functions.balanceOf(treasury).call() == 3 * 10**18
    r = client.post("/api/v1/admin/coin/burn", json={"amount": "4"}, headers={**admin, **idem()})
    assert r.status_code == 422 and r.json()["error"] == "InsufficientBalance"
    # burning from a holder who gave no allowance: the chain would revert, so nothing is sent
    assert mint(client, admin, ALICE, "1").status_code == 200
    r = client.post(
        "/api/v1/admin/coin/burn", json={"amount": "1", "from": ALICE}, headers={**admin, **idem()}
    )
    assert r.status_code == 422 and r.json()["error"] == "ChainRejected"


def test_balance_of_malformed_address(client: TestClient) -> None:
    r = client.get("/api/v1/accounts/0xnothex/balance")
    assert r.status_code == 422 and r.json()["error"] == "InvalidAddress"


def test_concurrent_first_mints_all_succeed(client: TestClient, ctx: Context) -> None:
    """On a fresh database the relayer's nonce counter does not exist yet: several first mints at once
    all create it; one insert wins, the others use it (on PostgreSQL they answered 500 before)."""
    admin = admin_headers(client, ctx)
    holders = [Account.create().address for _ in range(8)]
    with ThreadPoolExecutor(max_workers=len(holders)) as pool:
        answers = list(pool.map(lambda to: mint(client, admin, to, "1"), holders))
    assert [r.status_code for r in answers] == [200] * len(holders), [r.text for r in answers]
    for to in holders:
        assert ctx.coin.functions.balanceOf(to).call() == 10**18
    with Session(ctx.engine) as s:
        nonces = sorted(tx.nonce for tx in s.exec(select(OutgoingTx)).all())
    assert nonces == list(range(nonces[0], nonces[0] + len(holders)))


def test_mint_signs_a_fixed_gas_limit_and_refuses_what_would_revert(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mint is signed with MINT_GAS, no estimate; what an estimate caught is refused before signing."""
    from app.coin import service

    admin = admin_headers(client, ctx)
    estimated: list[object] = []
    real_estimate = ctx.relayer.estimate_gas
    monkeypatch.setattr(ctx.relayer, "estimate_gas", lambda **kw: estimated.append(kw) or real_estimate(**kw))
    r = mint(client, admin, ALICE, "3")
    assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
    with Session(ctx.engine) as s:
        tx = s.exec(select(OutgoingTx).order_by(OutgoingTx.id.desc())).first()  # type: ignore[union-attr]
        assert tx is not None and tx.gas == service.MINT_GAS and tx.gas_used is not None
        assert tx.gas_used * 2 <= service.MINT_GAS  # the documented margin holds on the real contract
    assert estimated == []
    sent = len(_outgoing(ctx))
    # the zero address: KIP-7 reverts a mint to it
    r = mint(client, admin, "0x" + "00" * 20, "1")
    assert r.status_code == 422 and r.json()["error"] == "ChainRejected", r.text
    # a relayer without the minter role (read once a minute; the cache is dropped here)
    ctx.cache.minter_seen = None
    monkeypatch.setattr(service, "MINTER_ROLE", "ab" * 32)
    r = mint(client, admin, ALICE, "1")
    assert r.status_code == 422 and "minter role" in r.json()["detail"], r.text
    assert len(_outgoing(ctx)) == sent  # nothing signed or stored
    ctx.cache.minter_seen = None
    monkeypatch.undo()
    # an amount that could overflow the supply is estimated (and here the estimate passes)
    calls: list[object] = []
    monkeypatch.setattr(ctx.relayer, "estimate_gas", lambda **kw: calls.append(kw) or real_estimate(**kw))
    r = mint(client, admin, ALICE, str(service.MINT_ESTIMATE_FROM // 10**18 + 1))
    assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
    assert len(calls) == 1


def _outgoing(ctx: Context) -> list[OutgoingTx]:
    with Session(ctx.engine) as s:
        return list(s.exec(select(OutgoingTx)))
