"""The market's background loop: match, close gates, record trades, release escrow (and settle)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from sqlmodel import Session

from app.context import Context
from app.market import engine, escrow, recording
from app.market.service import rules
from app.settlement.service import settle_ready_slots
from common import clock

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

    settle_ready_slots(ctx)
    ctx.relayer.kick()


class MarketWorker:
    """``before_pass``: work of upper layers run first in every pass (the automatic trader), so the
    market loop needs not import them."""

    def __init__(
        self, ctx: Context, interval: float = 1.0, before_pass: Sequence[Callable[[Context], None]] = ()
    ) -> None:
        self.ctx = ctx
        self.interval = interval
        self.before_pass = tuple(before_pass)
        self._stop = threading.Event()
        self._wake = ctx.market_wake
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="market", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for work in self.before_pass:
                try:
                    work(self.ctx)
                except Exception:
                    log.exception("%s failed", getattr(work, "__qualname__", work))
            try:
                run_once(self.ctx)
            except Exception:
                log.exception("market pass failed")
            # every placement kicks: under load, a short gap lets one incremental pass take what arrived
            # meanwhile instead of a pass per order
            self._stop.wait(MIN_PASS_GAP)
            self._wake.wait(self.interval)
            self._wake.clear()
