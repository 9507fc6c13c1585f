"""The collector's dispatch job against real simulators over Modbus TCP: a site that sold more than its PV
exports gets its battery commanded at the slot's first poll, delivers, is checked and released after the
slot; a device that refuses or ignores the command gets a dispatch fault. 5-minute slots, stepped time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from ess_collector.dispatch_records import DispatchRecord
from ess_collector.dispatcher import DISPATCH, Dispatcher
from tests.ess_collector.harness import START, Harness

SITE = 2  # seed 5: an 11.6 kWh / 5 kW battery that soaks up the noon PV in self-consumption
SLOT = START + timedelta(minutes=5)  # 03:05-03:10 UTC, around 12:05 KST


@pytest.fixture
def h(clean_db: Engine) -> Iterator[Harness]:
    harness = Harness(clean_db, n_sites=3, seed=5)
    yield harness
    harness.close()


def run_slot(h: Harness, sold: dict[int, int], slots: int = 1) -> Dispatcher:
    """Poll through ``slots`` slots from SLOT (each site selling ``sold`` in each) and into the next one,
    the dispatch job after each poll."""
    by_slot = {SLOT + k * h.cfg.slot: {h.site_ids[i]: wh for i, wh in sold.items()} for k in range(slots)}
    dispatcher = Dispatcher(h.collector, lambda slot: by_slot.get(slot, {}))
    while h.now < SLOT + slots * h.cfg.slot + timedelta(seconds=15):
        h.poll()
        h.loop.run_until_complete(dispatcher.run(h.now))
    return dispatcher


def records(h: Harness) -> list[DispatchRecord]:
    with Session(h.engine) as s:
        return list(s.exec(select(DispatchRecord).order_by(col(DispatchRecord.id))).all())


def exported(h: Harness, index: int, start: datetime, end: datetime) -> int:
    rows = [r for r in h.readings(index) if r.accepted and start <= r.ts <= end]
    return (rows[-1].export_wh or 0) - (rows[0].export_wh or 0)


def test_a_site_that_sold_more_than_pv_exports_discharges_and_is_released(h: Harness) -> None:
    h.poll_until(SLOT - timedelta(seconds=20))
    last = h.readings(SITE)[-1]
    assert last.pv_w is not None and last.load_w is not None and last.battery_w is not None
    assert last.battery_w < 0  # self-consumption: the battery takes the PV surplus, little is exported
    sold = 600  # 7.2 kW over 5 minutes: more than PV alone exports
    run_slot(h, {SITE: sold})
    (r,) = records(h)  # the sites that sold nothing get no record
    assert (r.site_id, r.slot_start, r.sold_wh) == (h.site_ids[SITE], SLOT, sold)
    assert r.mode == "floor" and r.battery_w > 0 and r.write_status == "accepted"
    assert r.status == "followed", r.detail
    assert r.battery_wh is not None and r.battery_wh > 0 and r.checked_at is not None
    assert r.released_at is not None and h.sims[SITE].controls.mod == 0
    # what left the site over the slot is what was sold (whole-Wh counters)
    out = exported(h, SITE, SLOT, SLOT + timedelta(minutes=5))
    assert out >= sold - 5, out  # corrected every sixth of the slot from what was exported so far
    assert not [f for f in h.faults(SITE) if f.kind == DISPATCH]
    # after the release the battery is back to soaking up the PV
    h.poll()
    assert (h.readings(SITE)[-1].battery_w or 0) < 0


def test_two_slots_in_a_row_are_two_commands_both_followed(h: Harness) -> None:
    h.poll_until(SLOT - timedelta(seconds=20))
    run_slot(h, {SITE: 500}, slots=2)
    first, second = records(h)
    assert (first.slot_start, second.slot_start) == (SLOT, SLOT + h.cfg.slot)
    assert first.status == second.status == "followed", (first.detail, second.detail)
    assert second.released_at is not None and h.sims[SITE].controls.mod == 0
    for r in (first, second):
        out = exported(h, SITE, r.slot_start, r.until)
        assert out >= 500 - 5, out


@pytest.mark.parametrize(
    ("fault", "status"), [("control_refused", "refused"), ("control_ignored", "not_followed")]
)
def test_a_device_that_refuses_or_ignores_is_a_fault(h: Harness, fault: str, status: str) -> None:
    h.cluster.set_fault(SITE, fault)
    h.poll_until(SLOT - timedelta(seconds=20))
    run_slot(h, {SITE: 600})
    (r,) = records(h)
    assert r.status == status, r.detail
    opened = [f for f in h.faults(SITE) if f.kind == DISPATCH]
    assert len(opened) == 1 and opened[0].closed_at is None
    h.poll()
    assert h.site(SITE).status == "fault"


def test_a_restart_does_not_command_twice(h: Harness) -> None:
    h.poll_until(SLOT + timedelta(seconds=20))
    by_slot = {SLOT: {h.site_ids[SITE]: 600}}
    h.loop.run_until_complete(Dispatcher(h.collector, lambda s: by_slot.get(s, {})).run(h.now))
    h.restart_collector()
    h.poll()
    h.loop.run_until_complete(Dispatcher(h.collector, lambda s: by_slot.get(s, {})).run(h.now))
    assert len(records(h)) == 1


def test_a_poll_in_which_no_site_sold_reads_the_pending_commands_only(h: Harness) -> None:
    """Every poll of an idle service: nothing sold, nothing pending; one SELECT, not the slot's records too."""
    h.poll()
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(h.engine, "before_cursor_execute", seen)
    try:
        h.loop.run_until_complete(Dispatcher(h.collector, lambda _slot: {}).run(h.now))
    finally:
        event.remove(h.engine, "before_cursor_execute", seen)
    assert [s.split()[0] for s in statements] == ["SELECT"], statements
    assert records(h) == []
