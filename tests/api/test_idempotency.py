"""Idempotency-Keys on create routes: the key's record is written, done, in the create's own transaction
(issue 14), so one commit per create; a concurrent request with the key loses on the unique constraint
and answers with the winner's answer; a record left in progress by a dead claim is taken over."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.context import Context
from app.core.errors import AppError, IdempotencyKeyReused, RequestInProgress
from app.core.security import utcnow
from app.idempotency import service as idempotency
from app.idempotency.models import IdempotencyRecord, IdempotencyState
from app.transfers import service as transfers
from app.transfers.models import Transfer
from app.transfers.schemas import TransferCreate
from app.users.models import User
from tests.api.helpers import admin_headers, parallel
from tests.api.wallet_helpers import fund, user_with_custodial_wallet


def _records(ctx: Context, key: str) -> list[IdempotencyRecord]:
    with Session(ctx.engine) as s:
        return list(s.exec(select(IdempotencyRecord).where(col(IdempotencyRecord.key) == key)).all())


def _transfers_of(ctx: Context, user_id: int) -> list[Transfer]:
    with Session(ctx.engine) as s:
        return list(s.exec(select(Transfer).where(col(Transfer.user_id) == user_id)).all())


@pytest.fixture
def sender(client: TestClient, ctx: Context) -> tuple[dict[str, str], int]:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "5")
    return headers, client.get("/api/v1/users/me", headers=headers).json()["id"]


def test_a_create_commits_once(ctx: Context, sender: tuple[dict[str, str], int]) -> None:
    _headers, user_id = sender
    with Session(ctx.engine, expire_on_commit=False) as session:
        commits: list[int] = []
        event.listen(session, "after_commit", lambda _s: commits.append(1))
        user = session.get(User, user_id)
        assert user is not None
        req = TransferCreate(to=Account.create().address, amount="0.1")
        status, body = transfers.create(ctx, session, user, req, uuid.uuid4().hex)
    assert status == 201 and body["status"] == "pending_authorization"
    assert commits == [1]  # the transfer, its steps and the key's record together


def test_parallel_creates_with_one_key_create_one_transfer(
    client: TestClient, ctx: Context, sender: tuple[dict[str, str], int]
) -> None:
    headers, user_id = sender
    key = uuid.uuid4().hex
    body = {"to": Account.create().address, "amount": "0.1"}
    answers = parallel(
        [
            lambda: client.post("/api/v1/transfers", json=body, headers={**headers, "Idempotency-Key": key})
            for _ in range(6)
        ]
    )
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert [t.id for t in _transfers_of(ctx, user_id)] == [answers[0].json()["id"]]
    assert [r.state for r in _records(ctx, key)] == [IdempotencyState.done]


def test_parallel_creates_with_one_key_and_other_bodies_create_one_transfer(
    client: TestClient, ctx: Context, sender: tuple[dict[str, str], int]
) -> None:
    headers, user_id = sender
    key = uuid.uuid4().hex
    to = Account.create().address
    answers = parallel(
        [
            lambda amount=amount: client.post(
                "/api/v1/transfers",
                json={"to": to, "amount": amount},
                headers={**headers, "Idempotency-Key": key},
            )
            for amount in ("0.1", "0.2", "0.3", "0.4")
        ]
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201, 422, 422, 422], [a.text for a in answers]
    assert {a.json()["error"] for a in answers if a.status_code == 422} == {"IdempotencyKeyReused"}
    assert len(_transfers_of(ctx, user_id)) == 1


def _stored_record(ctx: Context, scope: str, key: str, body: Any, **fields: Any) -> None:
    """A key's record as another request (or a process that died) left it."""
    with Session(ctx.engine) as s:
        s.add(IdempotencyRecord(scope=scope, key=key, request_hash=idempotency.request_hash(body), **fields))
        s.commit()


def _stale_record(ctx: Context, scope: str, key: str, body: Any, *, lease: timedelta) -> None:
    now = utcnow()
    _stored_record(
        ctx,
        scope,
        key,
        body,
        state=IdempotencyState.in_progress,
        created_at=now - timedelta(minutes=5),
        lease_until=now + lease,
    )


def test_a_record_left_in_progress_by_a_dead_claim_is_taken_over_once_its_lease_ran_out(
    client: TestClient, ctx: Context, sender: tuple[dict[str, str], int]
) -> None:
    headers, user_id = sender
    body = {"to": Account.create().address, "amount": "0.1"}
    live, dead = uuid.uuid4().hex, uuid.uuid4().hex
    scope = f"{user_id}:transfers.create"
    canonical = TransferCreate.model_validate(body).model_dump()
    _stale_record(ctx, scope, live, canonical, lease=timedelta(seconds=60))
    _stale_record(ctx, scope, dead, canonical, lease=-timedelta(seconds=1))
    r = client.post("/api/v1/transfers", json=body, headers={**headers, "Idempotency-Key": live})
    assert r.status_code == 409 and r.json()["error"] == "RequestInProgress"
    other = {**body, "amount": "0.2"}
    r = client.post("/api/v1/transfers", json=other, headers={**headers, "Idempotency-Key": dead})
    assert r.status_code == 422 and r.json()["error"] == "IdempotencyKeyReused"
    first = client.post("/api/v1/transfers", json=body, headers={**headers, "Idempotency-Key": dead})
    assert first.status_code == 201, first.text
    again = client.post("/api/v1/transfers", json=body, headers={**headers, "Idempotency-Key": dead})
    assert again.status_code == 201 and again.json() == first.json()
    [record] = _records(ctx, dead)
    assert record.state == IdempotencyState.done and record.resource == f"transfer:{first.json()['id']}"
    assert [t.id for t in _transfers_of(ctx, user_id)] == [first.json()["id"]]


# -- create_once against a concurrent winner, step by step ---------------------------------------------------


def _winner(ctx: Context, scope: str, key: str, body: Any, answer: dict[str, Any]) -> None:
    """What a concurrent request with the key commits while this one is in `make()`."""
    now = utcnow()
    _stored_record(
        ctx,
        scope,
        key,
        body,
        state=IdempotencyState.done,
        resource="thing:won",
        response_status=201,
        response_body=answer,
        created_at=now,
        lease_until=now,
    )


def _create_once(
    session: Session, key: str, body: Any, make: Callable[[], str]
) -> tuple[int, dict[str, Any]]:
    return idempotency.create_once(
        session,
        "test:things.create",
        key,
        body,
        kind="thing",
        load=lambda _id: None,
        make=make,
        ident=lambda thing: thing,
        render=lambda thing: {"id": thing},
    )


@pytest.mark.parametrize("fails", [False, True], ids=["made", "refused"])
def test_a_create_that_lost_to_a_concurrent_one_answers_with_the_winners_answer(
    ctx: Context, fails: bool
) -> None:
    key, body = uuid.uuid4().hex, {"n": 1}

    def make() -> str:
        _winner(ctx, "test:things.create", key, body, {"id": "won"})
        if fails:  # what it checked changed: the winner's answer goes first, as for a later request
            raise AppError("refused")
        return "lost"

    with Session(ctx.engine, expire_on_commit=False) as session:
        assert _create_once(session, key, body, make) == (201, {"id": "won"})
        assert not session.in_transaction()
    assert [r.resource for r in _records(ctx, key)] == ["thing:won"]


def test_a_create_that_lost_to_a_concurrent_one_with_another_body_is_refused(ctx: Context) -> None:
    key = uuid.uuid4().hex

    def make() -> str:
        _winner(ctx, "test:things.create", key, {"n": 2}, {"id": "won"})
        return "lost"

    with Session(ctx.engine, expire_on_commit=False) as session, pytest.raises(IdempotencyKeyReused):
        _create_once(session, key, {"n": 1}, make)


def test_a_refused_create_leaves_the_key_free(ctx: Context) -> None:
    key, body = uuid.uuid4().hex, {"n": 1}

    def refuse() -> str:
        raise AppError("refused")

    with Session(ctx.engine, expire_on_commit=False) as session:
        with pytest.raises(AppError):
            _create_once(session, key, body, refuse)
        assert not session.in_transaction()
        assert _records(ctx, key) == []
        assert _create_once(session, key, body, lambda: "made") == (201, {"id": "made"})
        assert _create_once(session, key, body, lambda: "again") == (201, {"id": "made"})


def test_a_stale_record_taken_over_meanwhile_is_not_taken_twice(ctx: Context) -> None:
    key, body = uuid.uuid4().hex, {"n": 1}
    _stale_record(ctx, "test:things.create", key, body, lease=-timedelta(seconds=1))

    def make() -> str:  # a concurrent request takes the record over first and is still running
        with Session(ctx.engine) as s:
            record = s.exec(select(IdempotencyRecord).where(col(IdempotencyRecord.key) == key)).one()
            record.lease_until = utcnow() + timedelta(seconds=60)
            s.add(record)
            s.commit()
        return "lost"

    with Session(ctx.engine, expire_on_commit=False) as session, pytest.raises(RequestInProgress):
        _create_once(session, key, body, make)
    assert [r.resource for r in _records(ctx, key)] == [None]


# -- claim (admin coin operations): the record is written with the operation it names ------------------------


def test_a_claimed_key_is_stored_only_with_what_it_starts(ctx: Context) -> None:
    key, body = uuid.uuid4().hex, {"n": 1}
    with Session(ctx.engine, expire_on_commit=False) as session:
        claimed = idempotency.claim(session, "test:ops", key, body)
        assert not claimed.replay and not claimed.resumed and claimed.record.id is None
        assert _records(ctx, key) == []  # nothing committed before the work starts
        idempotency.attach(session, claimed.record, "thing:1")
        session.commit()
    assert [(r.state, r.resource) for r in _records(ctx, key)] == [(IdempotencyState.in_progress, "thing:1")]


@pytest.mark.parametrize("winner_done", [False, True], ids=["running", "done"])
def test_a_claim_that_lost_to_a_concurrent_one_answers_as_a_later_request(
    ctx: Context, winner_done: bool
) -> None:
    key, body = uuid.uuid4().hex, {"n": 1}
    with Session(ctx.engine, expire_on_commit=False) as session:
        claimed = idempotency.claim(session, "test:ops", key, body)
        _winner(ctx, "test:ops", key, body, {"id": "won"})  # meanwhile, the other request stores its record
        if not winner_done:
            with Session(ctx.engine) as s:
                record = s.exec(select(IdempotencyRecord).where(col(IdempotencyRecord.key) == key)).one()
                record.state, record.lease_until = (
                    IdempotencyState.in_progress,
                    utcnow() + timedelta(minutes=1),
                )
                s.add(record)
                s.commit()
        with pytest.raises(IntegrityError):  # the key's unique constraint, at the insert of the record
            idempotency.attach(session, claimed.record, "thing:lost")
            session.commit()
        idempotency.release(session, claimed.record)
        if winner_done:
            assert idempotency.lost_to(session, claimed.record) == (201, {"id": "won"})
        else:
            with pytest.raises(RequestInProgress):
                idempotency.lost_to(session, claimed.record)
    assert [r.resource for r in _records(ctx, key)] == ["thing:won"]


def test_parallel_mints_with_one_key_mint_once(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    holder = Account.create().address
    key = uuid.uuid4().hex
    answers = parallel(
        [
            lambda: client.post(
                "/api/v1/admin/coin/mint",
                json={"to": holder, "amount": "1"},
                headers={**admin, "Idempotency-Key": key},
            )
            for _ in range(4)
        ]
    )
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 409} and 200 in codes, [a.text for a in answers]
    assert {a.json()["error"] for a in answers if a.status_code == 409} <= {"RequestInProgress"}
    assert len({a.json()["id"] for a in answers if a.status_code == 200}) == 1
    assert ctx.coin.functions.balanceOf(holder).call() == 10**18  # minted once
    assert [r.state for r in _records(ctx, key)] == [IdempotencyState.done]
