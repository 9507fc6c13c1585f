"""The collector's schedule (APScheduler 3, AsyncIOScheduler on a loop of its own thread).

Jobs: ``poll`` polls every due site; ``settle`` builds slot energies, anchors final slots and pays
production rewards. The database lease is kept by ``common/worker.py``'s ``LeaseKeeper`` (the same keeper as
the API's background workers), in a thread of its own. Every process may run this worker (several
API workers, a standby ``essx collector``): only the lease holder's jobs do anything, and its writes are
fenced by the lease, so the schedule never runs twice. The job state that matters (last accepted
counters, slot rows, ledger rows, rewards) is in the database, so a restart or a takeover resumes it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlmodel import Session, col, select

from app.context import Context
from app.core.money import parse_amount
from app.events.models import UserEvent
from app.sites.service import collector_config, meter_ledger
from app.wallets.service import active_wallet
from common import clock
from common.lease import Lease, LeaseLost
from common.worker import LeaseKeeper, name_os_thread
from ess_collector.aggregation import aggregate_due
from ess_collector.anchoring import anchor_due, on_anchor_final
from ess_collector.collector import Collector
from ess_collector.dispatcher import Dispatcher
from ess_collector.faults import FaultChange
from ess_collector.models import Site
from ess_collector.rewards import on_reward_final, reward_due
from wallet.purposes import TxPurpose

log = logging.getLogger(__name__)
LEASE_NAME = "ess-collector"


# The kinds of relayed transaction the collector prepares and finishes. The standalone collector's relayer
# acts on these only (``essx collector``); the service's relayer finishes them too, and every other kind.
COLLECTOR_KINDS = frozenset({TxPurpose.meter_anchor, TxPurpose.production_reward})


def install_hooks(ctx: Context) -> None:
    """Whichever process's relayer sees an anchor or a reward mint become final finishes its row (once:
    the relayer's compare-and-set on the transaction's status lets only one of them run the hook)."""
    ctx.relayer.completions.register(TxPurpose.meter_anchor, on_anchor_final)
    ctx.relayer.completions.register(TxPurpose.production_reward, on_reward_final)


def tell_owner(session: Session, site_id: int, change: FaultChange, ts: datetime) -> None:
    """The owner's live event stream hears of a site fault, written with the fault itself."""
    owner = session.exec(select(Site.owner_id).where(col(Site.id) == site_id)).first()
    if owner is not None:
        kind = "site.fault_opened" if change.open else "site.fault_closed"
        data = {"site_id": site_id, "fault": change.kind, "detail": change.detail}
        session.add(UserEvent(user_id=owner, kind=kind, at=ts, data=data))


def wallet_address(session: Session, user_id: int) -> str | None:
    """Where a production reward goes: the owner's active wallet, if any."""
    w = active_wallet(session, user_id)
    return w.address if w else None


def _not_leading(session: Session) -> None:
    raise LeaseLost(f"this process does not hold the {LEASE_NAME!r} lease")


class CollectorWorker:
    """`sold_by_site(session, slot_start)`: Wh each site sold in a slot, what its dispatch must deliver
    (the market's orders: app/market/service.py; the market sits above the sites, so it is passed in)."""

    def __init__(
        self,
        ctx: Context,
        *,
        sold_by_site: Callable[[Session, datetime], dict[int, int]],
        holder: str | None = None,
        own_relayer: bool = False,
    ) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.sold_by_site = sold_by_site
        # The standalone collector's relayer (its kinds only, ``COLLECTOR_KINDS``) is this worker's: it
        # runs while this process holds the collector's lease, its writes fenced by that lease. In the API
        # process the service's relayer is the background workers' (app/main.py) and this stays False.
        self.own_relayer = own_relayer
        if own_relayer:
            ctx.relayer.standby, ctx.relayer.fence = True, _not_leading
        self.cfg = collector_config(settings)
        self.lease = Lease(ctx.engine, LEASE_NAME, holder=holder, ttl_s=settings.collector_lease_seconds)
        every = max(1.0, self.lease.ttl.total_seconds() / 3)
        self.keeper = LeaseKeeper(self.lease, self._gained, self._lost, every_s=every)
        self.collector = Collector(ctx.engine, self.cfg, lease=self.lease, on_fault=tell_owner)
        self.dispatcher = Dispatcher(
            self.collector, self._sold, battery_power_pct=settings.site_battery_power_pct
        )
        self.ledger = meter_ledger(ctx)
        self.reward_per_kwh = parse_amount(settings.production_reward_per_kwh, allow_zero=True) or None
        self.job_seconds = settings.collector_job_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.polls = 0  # polls this process ran (for tests and the log)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.ledger is None:
            log.warning("no MeterLedger in this deployment: slots are aggregated but not anchored")
        self._thread = threading.Thread(target=self._run, name="ess-collector", daemon=True)
        self.keeper.start()  # the first attempt runs here: a lone process holds the lease before polling
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        name_os_thread("ess-collector")  # the scheduler's thread pool, started from here, inherits it
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        scheduler = self._scheduler = AsyncIOScheduler(
            event_loop=loop,
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        )
        scheduler.add_job(self._poll, IntervalTrigger(seconds=self.cfg.poll_interval_s), id="poll")
        scheduler.add_job(self._settle, IntervalTrigger(seconds=self.job_seconds), id="settle")
        scheduler.start()
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._scheduler is not None and self._scheduler.running:
                self._scheduler.shutdown(wait=False)
            self.collector.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            asyncio.get_running_loop().stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(15)
        self._thread = self._loop = None
        self.keeper.stop()  # releases the lease: a standby takes over at once rather than after the TTL

    # -- jobs -------------------------------------------------------------------------------------

    def _gained(self) -> None:
        log.info("collector schedule taken", extra={"fields": {"holder": self.lease.holder}})
        self._forget()  # another process may have polled meanwhile: reload from the database
        if self.own_relayer:
            relayer = self.ctx.relayer
            relayer.fence = self.lease.fence
            relayer.start()  # also finishes the anchors and mints a previous holder left in flight
            relayer.standby = False

    def _lost(self) -> None:
        log.warning("collector schedule lost", extra={"fields": {"holder": self.lease.holder}})
        self._forget()
        if self.own_relayer:
            relayer = self.ctx.relayer
            relayer.standby = True
            relayer.stop()
            relayer.fence = _not_leading  # a pass still finishing after the stop timed out writes nothing

    def _forget(self) -> None:
        """In the loop's thread, between two polls, never in the middle of one."""
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self.collector.forget)
        else:
            self.collector.forget()

    async def _poll(self) -> None:
        if not self.lease.held:
            return
        try:
            report = await self.collector.poll_once()
        except LeaseLost:
            self.collector.forget()
            return
        except Exception:  # e.g. the database is unreachable: nothing was stored, the next poll retries
            log.exception("poll failed")
            return
        self.polls += 1
        try:
            await self.dispatcher.run(clock.now())
        except LeaseLost:
            self.collector.forget()
        except Exception:  # a command not recorded is decided again at the next poll
            log.exception("dispatch failed")
        if report.failed:
            log.info(
                "poll",
                extra={
                    "fields": {"sites": report.sites, "failed": report.failed, "s": round(report.seconds, 3)}
                },
            )

    def _sold(self, slot_start: datetime) -> dict[int, int]:
        with Session(self.ctx.engine) as session:
            return self.sold_by_site(session, slot_start)

    def _settle(self) -> None:
        """Runs in the scheduler's thread pool: database and chain calls must not block the polls."""
        if not self.lease.held:
            return
        now = clock.now()
        try:
            aggregate_due(self.ctx.engine, self.cfg, now, lease=self.lease)
            if self.ledger is not None:
                anchor_due(
                    self.ctx.engine,
                    self.ctx.relayer,
                    self.ledger,
                    self.cfg,
                    now,
                    lease=self.lease,
                    reward_per_kwh=self.reward_per_kwh,
                )
            if self.reward_per_kwh:
                reward_due(self.ctx.engine, self.ctx.relayer, self.ctx.coin, wallet_address, lease=self.lease)
        except LeaseLost:
            log.warning("collector lease lost during settlement jobs")
        except Exception:
            log.exception("collector settle job failed; retried on its next run")
