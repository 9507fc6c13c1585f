"""The collector's fast insert stores exactly what SQLAlchemy's own insert stores, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ess_collector.collector import _READING_COLUMNS, _reading_row, _ReadingInsert
from ess_collector.models import SiteReading
from ess_collector.sunspec import Reading
from ess_collector.validation import Verdict
from tests.ess_collector.harness import make_owner, site_row

TS = datetime(2025, 6, 1, 3, 0, 0, 123456, tzinfo=UTC)


def _site(engine: Engine) -> int:
    owner = make_owner(engine)
    with Session(engine) as s:
        site = site_row(owner, "127.0.0.1", 1502, pv_nameplate_w=3000, battery_capacity_wh=5000)
        s.add(site)
        s.commit()
        return site.id or 0


def test_fast_insert_stores_what_sqlalchemy_stores(clean_db: Engine) -> None:
    site_id = _site(clean_db)
    r = Reading(
        pv_w=-3, load_w=500, grid_w=-20, battery_w=0, soc_pct=None, pv_wh=2**32 - 1, load_wh=1,
        import_wh=2, export_wh=3, battery_charge_wh=4, battery_discharge_wh=5, heartbeat=7,
        device_time=TS - timedelta(seconds=2), inverter_state=4, battery_state=3, alarm_code=0,
    )  # fmt: skip
    ok = Verdict("ok", accepted=True, interval_start=TS - timedelta(seconds=5), deltas=(1, 2, 3, 4, 5, 6))
    rejected = Verdict("out_of_range", "x" * 400)
    rows = [_reading_row(site_id, TS, r, ok), _reading_row(site_id, TS, r, rejected)]
    rows.append((site_id, TS, "missing", "SiteTimeout: no answer", *(None,) * 16, False, *(None,) * 7))
    with Session(clean_db) as s:
        _ReadingInsert(clean_db).run(s, rows)
        s.execute(
            insert(SiteReading.__table__), [dict(zip(_READING_COLUMNS, row, strict=True)) for row in rows]
        )  # type: ignore[attr-defined]
        s.commit()
    with clean_db.connect() as conn:  # raw values as stored, before any type processing on the way out
        stored = conn.execute(
            text(f"SELECT {', '.join(_READING_COLUMNS)} FROM site_readings ORDER BY id")
        ).all()
    assert len(stored) == 6 and [tuple(x) for x in stored[:3]] == [tuple(x) for x in stored[3:]]
    with Session(clean_db) as s:
        first = s.get(SiteReading, s.exec(text("SELECT min(id) FROM site_readings")).one()[0])  # type: ignore[call-overload]
    assert first is not None and first.ts == TS and first.pv_wh == 2**32 - 1 and first.accepted
    assert first.interval_start == TS - timedelta(seconds=5) and first.d_battery_discharge_wh == 6
