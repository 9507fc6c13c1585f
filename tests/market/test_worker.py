"""The market worker's passes: a placement's wake-up between two full passes only matches the books."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlmodel import Session, col, select

from app.context import Context
from app.core.security import utcnow
from app.market import engine
from app.market.models import Order, Trade
from app.market.service import rules
from app.market.worker import MarketWorker, run_once
from tests.market.test_live_book import users


def _open_order(ctx: Context, user_id: int, side: str, price: int) -> None:
    r = rules(ctx)
    now = utcnow()
    with Session(ctx.engine) as s:
        s.add(
            Order(
                id=uuid.uuid4().hex,
                user_id=user_id,
                side=side,
                slot_start=r.slot_of(now) + 2 * r.slot,
                quantity_wh=500,
                open_wh=500,
                limit_price=price,
                status="open",
                seq=engine.next_seq(s),
                created_at=now,
                updated_at=now,
            )
        )
        s.commit()


def test_a_wake_up_between_full_passes_only_matches_and_its_trades_bring_the_full_pass(ctx: Context) -> None:
    steps: list[str] = []
    worker = MarketWorker(  # never started: each pass is run here; the next full one is an hour away
        ctx,
        interval=3600,
        before_pass=[lambda _ctx: steps.append("trader")],
        after_pass=[lambda _ctx: steps.append("settlement")],
    )
    worker.run_pass()
    assert steps == ["trader", "settlement"]  # the first pass is a full one

    seller, buyer = users(ctx.engine, 2)
    _open_order(ctx, seller, "sell", 150 * 10**18)
    worker.run_pass()  # an order that crosses nothing: matched alone, nothing else runs
    assert steps == ["trader", "settlement"]
    with Session(ctx.engine) as s:
        assert not s.exec(select(Trade)).all()

    _open_order(ctx, buyer, "buy", 200 * 10**18)
    worker.run_pass()  # a trade: the full pass follows, to record it
    assert steps == ["trader", "settlement"] * 2
    with Session(ctx.engine) as s:
        trades = s.exec(select(Trade)).all()
        assert [(t.quantity_wh, t.price) for t in trades] == [(500, 200 * 10**18)]  # pay-as-bid
        assert s.exec(select(Order.status).where(col(Order.side) == "buy")).all() == ["filled"]


def _fenced(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """The background fence replaced by one that counts: each call is a commit of the market's pass."""
    commits: list[None] = []
    monkeypatch.setattr(ctx, "background_fence", lambda _session: commits.append(None))
    return commits


def test_an_idle_pass_commits_nothing(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    commits = _fenced(ctx, monkeypatch)
    kicks: list[None] = []
    monkeypatch.setattr(ctx.relayer, "kick", lambda: kicks.append(None))
    worker = MarketWorker(ctx)  # never started: its passes are run here
    worker.run_pass()  # builds the books
    worker._full_due = 0.0  # the next pass is a full one too
    worker.run_pass()
    assert worker.failures == 0
    assert commits == []  # no fence (an UPDATE of the lease) and no commit when nothing was written
    assert kicks == []  # nor a relayer pass: nothing was prepared

    seller, buyer = users(ctx.engine, 2)
    _open_order(ctx, seller, "sell", 150 * 10**18)
    _open_order(ctx, buyer, "buy", 200 * 10**18)
    run_once(ctx)
    assert commits  # the trade was committed through the fence
    with Session(ctx.engine) as s:
        assert [t.quantity_wh for t in s.exec(select(Trade)).all()] == [500]


def test_a_call_auction_that_fills_every_order_is_committed(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every order filled: nothing left to expire, and the fills were flushed by the query that followed
    # them, so only the flush tells the pass it wrote
    monkeypatch.setattr(ctx.settings, "market_mechanism", "call")
    ctx.market_rules = None
    commits = _fenced(ctx, monkeypatch)
    seller, buyer = users(ctx.engine, 2)
    _open_order(ctx, seller, "sell", 150 * 10**18)
    _open_order(ctx, buyer, "buy", 200 * 10**18)
    r = rules(ctx)
    closure = r.gate_closure(r.slot_of(utcnow()) + 2 * r.slot)
    monkeypatch.setattr("common.clock.now", lambda: closure + timedelta(seconds=1))
    run_once(ctx)
    assert commits
    with Session(ctx.engine) as s:
        assert [t.quantity_wh for t in s.exec(select(Trade)).all()] == [500]
        assert sorted(s.exec(select(Order.status)).all()) == ["filled", "filled"]
