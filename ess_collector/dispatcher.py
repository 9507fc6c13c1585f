"""The dispatch job: after each poll, a site that sold more in the current slot than PV alone exports gets
its battery commanded (``ess_collector.dispatch``), and when the slot is over the command is judged from
the readings and the battery returned to self-consumption.

At the first poll inside the slot (the market's gate closed before it, so what was sold is final), and
again every sixth of the slot (until the last sixth) with what is still due (sold less exported so far): the latest good
reading gives the state of charge and the PV and load of now, taken
as the expectation for the rest of the slot; ``decide`` turns the sold energy into a floor on the
battery's discharge, written over the collector's connection with the reversion timeout at the slot's
end. Every decision is a ``dispatch_commands`` row, also when no command was needed, so a restart does
not command twice. After the slot: ``check_slot`` on the first and last accepted readings of the
commanded interval, and ``release`` (before the new slot's command, if any).
A device that refuses the command or does not follow it opens a ``dispatch`` fault on the site; a
followed command closes it.

The sold energy per site comes from the caller (``SoldEnergy``): this package knows nothing of the market.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from ess_collector.models import SiteReading

from .dispatch import (
    ControlMode,
    DispatchCommand,
    DispatchStatus,
    WriteOutcome,
    WriteStatus,
    check_slot,
    decide,
)
from .dispatch_records import DispatchRecord
from .forecast import Battery
from .sunspec import Reading, StorageControls
from .supply import SupplyConfig

if TYPE_CHECKING:
    from .collector import Collector

log = logging.getLogger(__name__)
DISPATCH = "dispatch"  # the fault kind
# Aim this much above what was sold: PV and load change between corrections (none in the slot's last
# sixth), and energy short of the contract is not paid while a little extra is exported at feed-in.
DELIVERY_MARGIN_PCT = 5

SoldEnergy = Callable[[datetime], dict[int, int]]
"""slot start -> {site id: Wh the site sold (matched) in that slot}."""


class Dispatcher:
    """Run by the collector's poll job after ``Collector.poll_once`` (same process, same lease)."""

    def __init__(self, collector: Collector, sold: SoldEnergy, *, battery_power_pct: int = 50) -> None:
        self.collector, self.sold, self.power_pct = collector, sold, battery_power_pct
        self.engine, self.cfg = collector.engine, collector.cfg
        self.recheck = collector.cfg.slot / 6  # how often a running slot's command is corrected
        # ... while this much of the slot is left: the check after the slot needs readings over the last
        # command's interval (three polls)
        self.min_left = max(self.recheck, timedelta(seconds=3 * collector.cfg.poll_step_s))

    async def run(self, now: datetime) -> None:
        slot = self.cfg.slot_start(now)
        sold = {site: wh for site, wh in self.sold(slot).items() if wh > 0}
        with Session(self.engine) as session:
            ended = session.exec(
                select(DispatchRecord).where(
                    col(DispatchRecord.status) == "pending", col(DispatchRecord.slot_start) < slot
                )
            ).all()
            # the slot's records matter for the sites that sold in it only: none sold (most slots of most
            # sites, every poll of an idle service), no read
            current = (
                {
                    r.site_id: r
                    for r in session.exec(
                        select(DispatchRecord).where(col(DispatchRecord.slot_start) == slot)
                    )
                }
                if sold
                else {}
            )
        for record in ended:
            await self._finish(record, now)
        for site_id, wh in sold.items():
            if site_id not in self.collector.states:
                continue
            earlier = current.get(site_id)
            if earlier is None:
                await self._start(site_id, slot, wh, now, None)
            elif (
                earlier.status in ("pending", "not_needed")
                and now - earlier.issued_at >= self.recheck
                and slot + self.cfg.slot - now >= self.min_left
            ):
                await self._start(site_id, slot, wh, now, earlier)

    # -- at the slot's start ----------------------------------------------------------------------

    async def _start(
        self, site_id: int, slot: datetime, sold_wh: int, now: datetime, earlier: DispatchRecord | None
    ) -> None:
        """Decide and write the slot's command; ``earlier``: correct it from what was exported so far."""
        site = self.collector.target(site_id)
        with Session(self.engine) as session:
            reading = _latest(session, site_id, before=now)
            opening = _latest(session, site_id, before=slot) if earlier is not None else None
        target = sold_wh * (100 + DELIVERY_MARGIN_PCT) // 100
        due = target
        if earlier is not None and reading is not None and opening is not None:
            due = max(0, target - ((reading.export_wh or 0) - (opening.export_wh or 0)))
            if due == 0:
                return  # delivered already; the command (if any) reverts at the slot's end
        seconds = int(self.cfg.slot.total_seconds())
        left = max(1, int((slot + self.cfg.slot - now).total_seconds()))
        pv_w = reading.pv_w or 0 if reading else 0
        load_w = reading.load_w or 0 if reading else 0
        soc = None if reading is None or reading.soc_tenths is None else Decimal(reading.soc_tenths) / 10
        charge, discharge = SupplyConfig(battery_power_pct=self.power_pct).site_power_w(site)
        battery = Battery(site.battery_capacity_wh, soc, site.reserve_soc_pct, charge, discharge)
        pv_wh, load_wh = pv_w * left // 3600, -(-load_w * left // 3600)
        decision = decide(
            site_id=site_id,
            slot_start=slot,
            slot_seconds=seconds,
            now=now,
            sold_wh=due,
            bought_wh=0,
            expected_pv_wh=pv_wh,
            expected_load_wh=load_wh,
            battery=battery,
        )
        record = DispatchRecord(
            site_id=site_id,
            slot_start=slot,
            issued_at=now,
            until=slot + self.cfg.slot,
            sold_wh=sold_wh,
            expected_pv_wh=pv_wh,
            expected_load_wh=load_wh,
            status="not_needed",
            detail=decision.reason[:300],
        )
        cmd = decision.command
        if earlier is not None:
            if cmd is None:
                return  # PV exports the rest: the command (if any) stays until the slot's end
            record.id = earlier.id
            record.detail = f"correction, {due} Wh still due: {decision.reason}"[:300]
        if cmd is not None:
            outcome = await self.collector.command(site_id, cmd)
            record.mode, record.battery_w, record.shortfall_wh = (
                cmd.mode.value,
                cmd.battery_w,
                cmd.shortfall_wh,
            )
            record.write_status = outcome.status.value
            record.detail = f"{record.detail}; {outcome.detail}"[:300]
            if outcome.status is WriteStatus.REFUSED:
                record.status = DispatchStatus.REFUSED.value
            elif outcome.status is WriteStatus.UNREACHABLE:
                record.status = DispatchStatus.UNKNOWN.value
            elif not outcome.readback_ok:
                record.status = DispatchStatus.NOT_FOLLOWED.value
                record.detail = "the device reads back other controls than written"
            else:
                record.status = "pending"
        self._save(record, now)
        log.info(
            "dispatch",
            extra={"fields": {"site": site_id, "slot": slot.isoformat(), "status": record.status}},
        )

    # -- after the slot ---------------------------------------------------------------------------

    async def _finish(self, record: DispatchRecord, now: datetime) -> None:
        with Session(self.engine) as session:
            before = _latest(session, record.site_id, after=record.issued_at)
            after = _latest(session, record.site_id, before=record.until)
            site = self.collector.target(record.site_id) if record.site_id in self.collector.states else None
        if before is None or after is None or after.ts <= before.ts:
            record.status, record.detail = DispatchStatus.UNKNOWN.value, "no accepted readings over the slot"
        else:
            cmd = _command(record)
            written = StorageControls()  # the readback was compared with what was written at write time
            ok = WriteOutcome(WriteStatus.ACCEPTED, "", written=written, readback=written)
            result = check_slot(
                cmd,
                ok,
                _as_reading(before),
                _as_reading(after),
                reserve_pct=None if site is None else site.reserve_soc_pct,
            )
            record.status, record.detail = result.status.value, result.detail[:300]
            record.battery_wh, record.export_wh = result.battery_wh, result.export_wh
        record.checked_at = now
        if site is not None:  # before any command of the new slot (run() finishes first)
            released = await self.collector.command(record.site_id, None)
            if released.status is WriteStatus.ACCEPTED:
                record.released_at = now
        self._save(record, now)

    def _save(self, record: DispatchRecord, now: datetime) -> None:
        failed = record.status in (DispatchStatus.REFUSED.value, DispatchStatus.NOT_FOLLOWED.value)
        with Session(self.engine) as session:
            if self.collector.lease is not None:
                self.collector.lease.fence(session)
            session.add(session.merge(record))
            if failed:
                self.collector.set_fault(session, record.site_id, DISPATCH, True, record.detail, now)
            elif record.status == DispatchStatus.FOLLOWED.value:
                self.collector.set_fault(session, record.site_id, DISPATCH, False, None, now)
            session.commit()


def _command(r: DispatchRecord) -> DispatchCommand:
    return DispatchCommand(
        site_id=r.site_id,
        slot_start=r.slot_start,
        issued_at=r.issued_at,
        until=r.until,
        seconds=max(1, int((r.until - r.issued_at).total_seconds())),
        mode=ControlMode(r.mode or "floor"),
        battery_w=r.battery_w,
        target_export_wh=r.sold_wh,
        target_import_wh=0,
        shortfall_wh=r.shortfall_wh,
    )


def _latest(
    session: Session, site_id: int, *, before: datetime | None = None, after: datetime | None = None
) -> SiteReading | None:
    """The last accepted reading at or before ``before``, or the first one at or after ``after``."""
    q = select(SiteReading).where(col(SiteReading.site_id) == site_id, col(SiteReading.accepted).is_(True))
    if before is not None:
        q = q.where(col(SiteReading.ts) <= before).order_by(col(SiteReading.ts).desc())
    if after is not None:
        q = q.where(col(SiteReading.ts) >= after).order_by(col(SiteReading.ts))
    return session.exec(q.limit(1)).first()


def _as_reading(r: SiteReading) -> Reading:
    return Reading(
        soc_pct=None if r.soc_tenths is None else Decimal(r.soc_tenths) / 10,
        import_wh=r.import_wh,
        export_wh=r.export_wh,
        battery_charge_wh=r.battery_charge_wh,
        battery_discharge_wh=r.battery_discharge_wh,
        battery_w=r.battery_w,
        received_at=r.ts,
    )
