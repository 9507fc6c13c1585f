"""The market's background loop: match, close gates, record trades, release escrow.

Work of other domains that belongs in the same loop (the automatic trader before the market's pass,
settlement after it) is passed in by whoever composes the background jobs (``app/main.py``), so the market
imports neither of them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import event
from sqlmodel import Session

from app.context import Context
from app.market import engine, escrow, recording
from app.market.rules import MarketRules
from app.market.service import rules
from common import clock
from common.worker import Pacing, Worker

log = logging.getLogger(__name__)
MIN_PASS_GAP = 0.1  # seconds between two passes


def run_once(ctx: Context) -> None:
    """One pass over everything the market has to do; safe to run again at any time."""

    r = rules(ctx)
    now = clock.now()
    with engine.slot_lock(ctx), Session(ctx.engine, expire_on_commit=False) as session:
        flushed = _count_flushes(session)
        try:
            trades = _match(ctx, session, r, now)
            closed = engine.close_gates(ctx, session, r, now)
            if trades or closed or flushed or session.new or session.dirty or session.deleted:
                ctx.commit_background(session)
            else:  # the idle pass: nothing written, so no fence (an UPDATE) and no commit
                session.rollback()
        except BaseException:
            engine.live_books(ctx).reset()  # it may hold fills that were not committed: rebuild it
            raise
        released = escrow.release_closed(ctx, session, r, now)
        if released:
            ctx.commit_background(session)
    if released:
        ctx.relayer.kick()  # recording and settlement kick it themselves when they prepare a transaction
    recording.submit_trades(ctx)


def _match(ctx: Context, session: Session, r: MarketRules, now: datetime) -> Sequence[object]:
    """The continuous books' matching, each slot up to its gate closure (a call auction: nothing)."""
    if r.mechanism != "continuous":
        return ()
    return engine.match_open_slots(ctx, session, lambda slot_start: r.gate_closure(slot_start) > now)


def match_only(ctx: Context) -> bool:
    """The continuous books' matching alone (what a placement wakes the worker for): True when it made
    trades, which the full pass that follows records. Nothing matched: nothing was written, and the
    transaction ends without a commit (it took the change counter's lock only if the new orders crossed
    a price: `LiveBooks.match`)."""
    r = rules(ctx)
    if r.mechanism != "continuous":
        return False
    now = clock.now()
    with engine.slot_lock(ctx), Session(ctx.engine, expire_on_commit=False) as session:
        try:
            trades = _match(ctx, session, r, now)
            if not trades:
                session.rollback()
                return False
            ctx.commit_background(session)
        except BaseException:
            engine.live_books(ctx).reset()  # it may hold fills that were not committed: rebuild it
            raise
    return True


class MarketWorker(Worker):
    """``before_pass`` and ``after_pass``: work of other domains run in every pass before and after the
    market's own (the automatic trader, settlement), so the market needs not import them. Each step's
    failure is logged and the others still run."""

    def __init__(
        self,
        ctx: Context,
        interval: float = 1.0,
        before_pass: Sequence[Callable[[Context], object]] = (),
        after_pass: Sequence[Callable[[Context], object]] = (),
    ) -> None:
        # No kick of the relayer after each pass: every step that prepares a transaction kicks it, and an
        # idle pass's kick was a relayer pass a second for nothing (it reads rows of other processes on
        # its own pace).
        steps = [_bound(work, ctx) for work in (*before_pass, run_once, *after_pass)]
        # every placement kicks: under load, a short gap lets one incremental pass take what arrived
        # meanwhile instead of a pass per order
        pacing = Pacing(interval, busy_interval=interval, backoff_first=interval, backoff_max=10.0)
        super().__init__("market", steps, pacing, wake=ctx.market_wake, min_gap=MIN_PASS_GAP)
        self.ctx = ctx
        self.full_every = interval
        self._full_due = 0.0  # time.monotonic() from which the next pass is a full one

    def run_pass(self) -> bool:
        """Every step, at most once per `interval`; a placement's wake-up in between only matches the
        books (`match_only`), and goes on to the full pass when that made trades, to record them. Under
        load, placements wake the worker up to ten times a second: the full pass each time (the trader,
        gate closures, releases, recording, settlement, the relayer's pass) cost more than the
        placements themselves. A failing `match_only` also goes on: the full pass reports its error."""
        now = time.monotonic()
        if now < self._full_due:
            try:
                if not match_only(self.ctx):
                    return False
            except Exception:  # the full pass below meets it again, and logs it
                log.debug("matching between full passes failed; the full pass follows", exc_info=True)
        self._full_due = now + self.full_every
        return super().run_pass()


def _count_flushes(session: Session) -> list[object]:
    """A list that gets an item each time the session flushes: a pass that flushed has written (a call
    auction's fills are flushed by the query that follows them, so `session.new` is empty again)."""
    flushes: list[object] = []

    @event.listens_for(session, "after_flush")
    def _flushed(*_args: object) -> None:
        flushes.append(None)

    return flushes


def _bound(work: Callable[[Context], object], ctx: Context) -> Callable[[], object]:
    def step() -> object:
        return work(ctx)

    step.__qualname__ = getattr(work, "__qualname__", repr(work))
    return step
