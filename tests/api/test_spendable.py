"""A custodial wallet's spendable coins from a balance read earlier plus our own record of its spends
(app/spending/holds.py): a yes never exceeds the chain's answer, and a no is the chain's answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from app.context import Context
from app.core.security import utcnow
from app.market.models import EscrowStatus, Order
from app.spending import holds
from app.transfers.models import Transfer, TransferStatus
from app.users.models import Role
from app.users.service import create_user
from tests.api.helpers import admin_headers, idem
from tests.api.wallet_helpers import PIN, fund, user_with_custodial_wallet, wait_final


def _create(client: TestClient, headers: dict[str, str], amount: str) -> str:
    r = client.post(
        "/api/v1/transfers",
        json={"to": Account.create().address, "amount": amount},
        headers={**headers, **idem()},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _authorize(client: TestClient, headers: dict[str, str], transfer_id: str):
    return client.post(f"/api/v1/transfers/{transfer_id}/authorize", json={"pin": PIN}, headers=headers)


@pytest.fixture
def every_hold_says_when_spent(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The escrow's hold as it would register with its spent states (app/market/models.py does not name
    them yet, and without them the balance is always read from the chain)."""
    escrow = (EscrowStatus.locked, EscrowStatus.releasing, EscrowStatus.released)
    complete = [
        replace(h, spent=escrow, changed_at=Order.updated_at) if h.amount is Order.escrow_amount else h
        for h in holds.HOLDS
    ]
    monkeypatch.setattr(holds, "HOLDS", complete)
    holds._queries.clear()
    yield
    holds._queries.clear()


def test_a_remembered_balance_counts_spends_mined_since_and_asks_the_chain_before_refusing(
    client: TestClient, ctx: Context, every_hold_says_when_spent: None
) -> None:
    admin = admin_headers(client, ctx)
    _user, headers, address = user_with_custodial_wallet(client)
    fund(client, admin, address, "10")
    first, second, third = (
        _create(client, headers, "6"),
        _create(client, headers, "5"),
        _create(client, headers, "6"),
    )
    # The first authorisation reads the balance (10) from the chain; this process remembers it.
    assert _authorize(client, headers, first).status_code == 200
    assert wait_final(client, headers, first)["status"] == "confirmed"
    assert ctx.cache.balances[address].value == 10 * 10**18
    with Session(ctx.engine) as s:
        assert (
            holds._spendable_from_recent_balance(ctx, s, address) == 4 * 10**18
        )  # answered without the chain
    # 4 left on chain: the remembered 10 less the 6 confirmed since it was read does not cover 5.
    refused = _authorize(client, headers, second)
    assert refused.status_code == 422, refused.text
    assert "the wallet has 4 available" in refused.json()["detail"]
    # Coins received since the read are not in the remembered balance: the chain is asked, not refused.
    fund(client, admin, address, "3")
    assert _authorize(client, headers, third).status_code == 200
    assert wait_final(client, headers, third)["status"] == "confirmed"
    assert ctx.coin.functions.balanceOf(address).call() == 1 * 10**18


def test_a_right_pin_for_a_refused_spend_still_starts_the_count_over(
    client: TestClient, ctx: Context
) -> None:
    """The right PIN's record is written with the spend; when the spend is refused (here: the coins are
    promised to an earlier transfer), it is written alone, so the wrong PINs before it do not add up."""
    admin = admin_headers(client, ctx)
    _user, headers, address = user_with_custodial_wallet(client)
    fund(client, admin, address, "1")
    first, second = _create(client, headers, "1"), _create(client, headers, "1")
    assert _authorize(client, headers, first).status_code == 200
    for _ in range(4):
        wrong = client.post(f"/api/v1/transfers/{second}/authorize", json={"pin": "000000"}, headers=headers)
        assert wrong.status_code == 403, wrong.text
    refused = _authorize(client, headers, second)
    assert refused.status_code == 422 and refused.json()["error"] == "InsufficientBalance", refused.text
    wrong = client.post(f"/api/v1/transfers/{second}/authorize", json={"pin": "000000"}, headers=headers)
    assert wrong.status_code == 403 and "4 attempts left" in wrong.json()["detail"], wrong.text


def test_a_hold_registered_again_replaces_its_table_s_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    # as when a models module is imported a second time: its spends must not be counted twice
    monkeypatch.setattr(holds, "HOLDS", list(holds.HOLDS))
    before = len(holds.HOLDS)
    order_hold = next(h for h in holds.HOLDS if h.amount is Order.escrow_amount)
    holds.register(replace(order_hold))
    assert len(holds.HOLDS) == before
    assert sum(h.amount is Order.escrow_amount for h in holds.HOLDS) == 1


def test_held_coins_are_summed_exactly_past_64_bits(clean_db: Engine) -> None:
    """The holds are summed in SQL (one row back, not one per hold), exactly: amounts wider than 64 bits,
    up to uint256, with carries between the parts SQLite sums them in."""
    held = [2**256 - 1, 12345 * 10**18 + 999_999_999_999, 999_999_999_999, 1, 2**63, 2**64 + 7]
    address, other = Account.create().address, Account.create().address
    now = utcnow()
    with Session(clean_db) as s:
        user_id = create_user(s, "sum@example.com", "a long enough password", "Sum", Role.consumer).id or 0

        def transfer(n: int, sender: str, amount: int, status: TransferStatus, at: object = now) -> Transfer:
            return Transfer(
                id=f"{n:032x}", user_id=user_id, wallet_kind="custodial", from_address=sender,
                to_address=other, amount=amount, status=status, nonce="0x00", valid_after=0, valid_before=0,
                typed_data={}, created_at=now, updated_at=at,
            )  # fmt: skip

        statuses = [TransferStatus.authorized, TransferStatus.submitted]
        s.add_all(transfer(n, address, a, statuses[n % 2]) for n, a in enumerate(held))
        s.add(transfer(10, address, 5, TransferStatus.pending_authorization))  # not authorised: no hold
        s.add(transfer(11, address, 2**70, TransferStatus.confirmed))  # mined now
        s.add(transfer(12, address, 3, TransferStatus.confirmed, now - timedelta(hours=1)))  # mined before
        s.add(transfer(13, other, 2**65, TransferStatus.authorized))  # another wallet's
        s.commit()
        assert holds.reserved(s, address) == sum(held)
        assert holds.reserved(s, address, spent_since=now - timedelta(minutes=1)) == sum(held) + 2**70
        assert holds.reserved(s, other) == 2**65
        assert holds.reserved(s, Account.create().address) == 0


def test_before_the_locks_a_check_only_reads_a_balance_the_check_under_them_could_not_answer_from(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check_available(..., before_locks=True)`: no statement and no refusal; an eth_call only when the
    check under the locks would find no balance recent enough for it (a custodial wallet's reads stay
    usable for OWN_KEY_BALANCE_SECONDS, a rechecked spend's for RECHECKED_BALANCE_SECONDS)."""
    from sqlalchemy import event

    address = Account.create().address  # holds nothing: a refusal would show
    calls: list[str] = []
    statements: list[str] = []
    make_request = ctx.w3.provider.make_request

    def counted(method: object, params: object) -> object:
        calls.append(str(method))
        return make_request(method, params)

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    monkeypatch.setattr(ctx.w3.provider, "make_request", counted)
    event.listen(ctx.engine, "before_cursor_execute", seen)

    def first_check(**how: bool) -> None:
        with Session(ctx.engine) as s:
            holds.check_available(ctx, s, address, 10**18, "the escrow", before_locks=True, **how)

    try:
        first_check(rechecked=True)
        assert calls == ["eth_call"]  # nothing read yet: read now, not under the locks
        first_check(rechecked=True)
        first_check(own_key=True, rechecked=True)
        assert calls == ["eth_call"]  # just read
        read = ctx.cache.balances[address]
        ctx.cache.balances[address] = read._replace(at=read.at - holds.RECHECKED_BALANCE_SECONDS - 1)
        first_check(own_key=True, rechecked=True)  # our own key's read is still usable under the locks
        assert calls == ["eth_call"]
        first_check(rechecked=True)  # a linked wallet's is not
        assert calls == ["eth_call", "eth_call"]
        del ctx.cache.balances[address]
        first_check()  # neither: the check under the locks asks the chain anyway
        assert calls == ["eth_call", "eth_call"]
        assert statements == []
    finally:
        event.remove(ctx.engine, "before_cursor_execute", seen)
