"""The market's background loop: match, close gates, record trades, release escrow.

Work of other domains that belongs in the same loop (the automatic trader before the market's pass,
settlement after it) is passed in by whoever composes the background jobs (``app/main.py``), so the market
imports neither of them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlmodel import Session

from app.context import Context
from app.market import engine, escrow, recording
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
        try:
            if r.mechanism == "continuous":
                engine.match_open_slots(ctx, session, lambda slot_start: r.gate_closure(slot_start) > now)
            engine.close_gates(ctx, session, r, now)
            ctx.commit_background(session)
        except BaseException:
            engine.live_books(ctx).reset()  # it may hold fills that were not committed: rebuild it
            raise
        if escrow.release_closed(ctx, session, r, now):
            ctx.commit_background(session)
    recording.submit_trades(ctx)


class MarketWorker(Worker):
    """``before_pass`` and ``after_pass``: work of other domains run in every pass before and after the
    market's own (the automatic trader, settlement), so the market needs not import them. Each step's
    failure is logged and the others still run; the relayer is kicked at the end of every pass."""

    def __init__(
        self,
        ctx: Context,
        interval: float = 1.0,
        before_pass: Sequence[Callable[[Context], object]] = (),
        after_pass: Sequence[Callable[[Context], object]] = (),
    ) -> None:
        steps = [_bound(work, ctx) for work in (*before_pass, run_once, *after_pass)]
        steps.append(ctx.relayer.kick)
        # every placement kicks: under load, a short gap lets one incremental pass take what arrived
        # meanwhile instead of a pass per order
        pacing = Pacing(interval, busy_interval=interval, backoff_first=interval, backoff_max=10.0)
        super().__init__("market", steps, pacing, wake=ctx.market_wake, min_gap=MIN_PASS_GAP)
        self.ctx = ctx


def _bound(work: Callable[[Context], object], ctx: Context) -> Callable[[], object]:
    def step() -> object:
        return work(ctx)

    step.__qualname__ = getattr(work, "__qualname__", repr(work))
    return step
