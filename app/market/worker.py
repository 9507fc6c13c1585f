"""The market's background loop: match, close gates, record trades, release escrow (and settle)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from sqlmodel import Session

from app.context import Context
from app.core import clock
from app.market import engine, recording
from app.market.onchain import id32

log = logging.getLogger(__name__)


def run_once(ctx: Context) -> None:
    """One pass over everything the market has to do; safe to run again at any time."""
    from app.market.service import rules

    r = rules(ctx)
    now = clock.now()
    with engine.slot_lock(ctx), Session(ctx.engine, expire_on_commit=False) as session:
        if r.mechanism == "continuous":
            for slot_start in engine.slots_with_open_orders(session):
                if r.gate_closure(slot_start) > now:
                    engine.match_slot(ctx, session, slot_start)
        engine.close_gates(ctx, session, r, now)
        ctx.commit_background(session)
        ready = engine.escrows_to_release(session, r, now)
        if ready:
            market = ctx.contracts["EnergyMarket"]
            data = market.encodeABI(fn_name="releaseEscrows", args=[[id32(o.id) for o in ready]])
            tx = ctx.relayer.prepare(session, to=market.address, data=data, purpose="escrow_release_batch")
            for o in ready:
                o.escrow_status, o.release_tx_id = "releasing", tx.id
                session.add(o)
            ctx.commit_background(session)
    recording.submit_trades(ctx)
    from app.settlement.service import settle_ready_slots

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
        self._wake = ctx.extras.setdefault("market_wake", threading.Event())
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
            self._wake.wait(self.interval)
            self._wake.clear()
