"""The real collector against simulated sites over TCP and the real database: readings, slots, restarts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ess_collector.models import Site
from ess_collector.validation import ENERGY
from tests.ess_collector.harness import START, Harness, accepted_energy, counters


@pytest.fixture
def h(clean_db: Engine) -> Iterator[Harness]:
    harness = Harness(clean_db, 2)
    yield harness
    harness.close()


def test_readings_are_what_the_sites_serve_and_carry_their_energy(h: Harness) -> None:
    reports = h.poll(4)
    assert all(r.polled == 2 and r.answered == 2 and r.failed == 0 for r in reports)
    for i, sim in enumerate(h.sims):
        rows = h.readings(i)
        assert [r.quality for r in rows] == ["ok"] * 4 and all(r.accepted for r in rows)
        last = rows[-1]
        assert last.ts == h.now and last.pv_w == sim.reading.pv_w and last.grid_w == sim.reading.grid_w
        assert last.soc_tenths == int(sim.reading.soc_pct * 10)
        assert counters(last) == tuple(getattr(sim.reading, f) for f in ENERGY)
        assert rows[0].interval_start is None  # the first reading is the baseline
        for prev, cur in pairwise(rows):
            assert cur.interval_start == prev.ts
            assert tuple(c - p for c, p in zip(counters(cur), counters(prev), strict=True)) == tuple(
                getattr(cur, f"d_{f}") for f in ENERGY
            )
        seen = h.site(i).last_seen_at
        assert h.site(i).status == "online" and seen is not None and h.now - seen < timedelta(seconds=30)


def test_a_full_slot_is_complete_and_equals_the_counter_difference(h: Harness) -> None:
    end = START + h.cfg.slot
    h.poll_until(end + timedelta(minutes=2))
    assert h.aggregate() == 4  # the slot before START (registration) and START, for both sites
    for i in range(2):
        (slot,) = [s for s in h.slots(i) if s.slot_start == START]
        by_ts = {r.ts: r for r in h.readings(i)}
        first, last = by_ts[START], by_ts[end]  # polls land on the boundaries: no split needed
        assert slot.status == "complete" and slot.good_polls == slot.expected_polls == 30
        expected = tuple(a - b for a, b in zip(counters(last), counters(first), strict=True))
        assert tuple(getattr(slot, f) for f in ENERGY) == expected
        assert slot.pv_wh and slot.pv_wh > 0 and slot.load_wh and slot.load_wh > 0
        assert slot.pv_w_min is not None and slot.pv_w_min <= (slot.pv_w_avg or 0) <= (slot.pv_w_max or 0)
        assert slot.soc_start_tenths == first.soc_tenths
    h.advance(0)
    assert h.aggregate() == 0  # rows exist: aggregation runs once per slot


def test_a_restart_mid_slot_creates_no_phantom_energy(h: Harness) -> None:
    end = START + h.cfg.slot
    h.poll_until(START + timedelta(minutes=2))
    h.restart_collector()
    h.advance(40)  # the collector is down for 40 s: the sites keep producing
    h.poll_until(end + timedelta(minutes=2))
    h.aggregate()
    for i in range(2):
        (slot,) = [s for s in h.slots(i) if s.slot_start == START]
        by_ts = {r.ts: r for r in h.readings(i)}
        expected = tuple(a - b for a, b in zip(counters(by_ts[end]), counters(by_ts[START]), strict=True))
        assert tuple(getattr(slot, f) for f in ENERGY) == expected  # measured across the gap, exactly
        assert slot.good_polls == 30 - 4 and slot.status == "recovered"  # 26/30 good: below 90 %
        rows = h.readings(i)
        assert accepted_energy(rows) == tuple(
            a - b for a, b in zip(counters(rows[-1]), counters(rows[0]), strict=True)
        )


def test_a_restart_across_a_slot_boundary_leaves_both_slots_incomplete(h: Harness) -> None:
    end = START + h.cfg.slot
    h.poll_until(end - timedelta(seconds=40))
    h.restart_collector()
    h.advance(90)  # down from 40 s before the boundary to 50 s after: longer than max_gap_s
    h.poll_until(end + h.cfg.slot + timedelta(minutes=2))
    h.aggregate()
    statuses = {s.slot_start: s.status for s in h.slots(0)}
    assert statuses[START] == "incomplete" and statuses[end] == "incomplete"


def test_disabled_sites_are_not_polled(h: Harness) -> None:
    h.poll()
    assert len(h.collector.pool) == 2  # one open connection per site
    with Session(h.engine) as s:
        site = s.get(Site, h.site_ids[1])
        assert site is not None
        site.enabled = False
        s.add(site)
        s.commit()
    before = len(h.readings(1))
    (report,) = h.poll()
    assert report.sites == 1 and report.polled == 1
    assert len(h.readings(1)) == before
    assert len(h.collector.pool) == 1  # the disabled site's connection is closed
