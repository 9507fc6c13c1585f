"""Sites API: registration rules, visibility, status and faults, readings, slots, supply, admin disable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.context import Context
from app.core.security import utcnow
from app.events.models import UserEvent
from app.sites.service import estimate_supply
from app.sites.worker import tell_owner
from ess_collector.aggregation import aggregate_due
from ess_collector.collector import Collector
from ess_collector.models import SlotEnergy
from ess_collector.simulator import SimulatorCluster, ThreadedCluster
from tests.api.helpers import admin_headers, login, register
from tests.api.site_helpers import prosumer, site, unused_port
from tests.ess_collector.harness import FAST, START, site_row

BEFORE = START - timedelta(seconds=30)  # polls land on START and every 10 s after it
READING_FIELDS = {
    "ts",
    "quality",
    "detail",
    "pv_w",
    "load_w",
    "grid_w",
    "battery_w",
    "soc_pct",
    "pv_wh",
    "load_wh",
    "import_wh",
    "export_wh",
    "battery_charge_wh",
    "battery_discharge_wh",
}


@pytest.fixture
def sims() -> Iterator[ThreadedCluster]:
    with ThreadedCluster(SimulatorCluster(1, seed=5, start=BEFORE, speed=0)) as running:
        yield running


def body(cluster: ThreadedCluster, **kw: object) -> dict[str, object]:
    sim = cluster.sims[0]
    return {
        "name": "Roof A",
        "host": "127.0.0.1",
        "port": cluster.ports[0],
        "device_id": 1,
        "pv_nameplate_w": sim.config.pv_peak_w,
        "battery_capacity_wh": sim.config.capacity_wh,
        "reserve_soc_pct": sim.config.reserve_pct,
    } | kw


def test_register_a_reachable_site_and_see_it(
    client: TestClient, ctx: Context, sims: ThreadedCluster
) -> None:
    headers, user_id = prosumer(client, ctx)
    r = client.post("/api/v1/sites", json=body(sims), headers=headers)
    assert r.status_code == 201, r.text
    site = r.json()
    assert site["owner_id"] == user_id and site["status"] == "online" and site["enabled"]
    listed = client.get("/api/v1/sites", headers=headers).json()
    assert [s["id"] for s in listed] == [site["id"]]
    detail = client.get(f"/api/v1/sites/{site['id']}", headers=headers).json()
    assert detail["open_faults"] == [] and detail["last_reading"] is None


def test_an_unreachable_site_is_accepted_and_shows_offline_with_a_fault(
    client: TestClient, ctx: Context
) -> None:
    headers, _ = prosumer(client, ctx)
    r = client.post(
        "/api/v1/sites",
        json=site(name="Later"),
        headers=headers,
    )
    assert r.status_code == 201, r.text
    detail = client.get(f"/api/v1/sites/{r.json()['id']}", headers=headers).json()
    assert detail["status"] == "offline"
    (fault,) = detail["open_faults"]
    assert fault == fault | {"kind": "comm_lost", "detail": "no valid answer from the device when registered"}


MALFORMED = [
    {"host": "bad host!"},
    {"host": "10.0.0.300"},
    {"host": "-leading.example"},
    {"port": 0},
    {"port": 70000},
    {"device_id": 0},
    {"pv_nameplate_w": 0},
    {"reserve_soc_pct": 101},
    {"battery_capacity_wh": -1},
]


def test_malformed_registrations_are_422(client: TestClient, ctx: Context) -> None:
    headers, _ = prosumer(client, ctx)
    base = {
        "name": "x",
        "host": "127.0.0.1",
        "port": 1502,
        "pv_nameplate_w": 3000,
        "battery_capacity_wh": 5000,
    }
    for change in MALFORMED:
        r = client.post("/api/v1/sites", json=base | change, headers=headers)
        assert r.status_code == 422 and r.json()["error"] == "ValidationError", change
    assert client.get("/api/v1/sites", headers=headers).json() == []


def test_same_endpoint_twice_is_409_and_owners_are_checked(client: TestClient, ctx: Context) -> None:
    headers, user_id = prosumer(client, ctx)
    other_headers, other_id = prosumer(client, ctx)
    site = {
        "name": "x",
        "host": "LocalHost",
        "port": unused_port(),
        "pv_nameplate_w": 3000,
        "battery_capacity_wh": 0,
    }
    assert client.post("/api/v1/sites", json=site, headers=headers).status_code == 201
    again = client.post("/api/v1/sites", json=site | {"host": "localhost"}, headers=other_headers)
    assert again.status_code == 409 and again.json()["error"] == "Conflict"
    other_device = client.post("/api/v1/sites", json=site | {"device_id": 2}, headers=headers)
    assert other_device.status_code == 201  # another unit id behind the same gateway is another site
    theft = client.post(
        "/api/v1/sites", json=site | {"port": unused_port(), "owner_id": other_id}, headers=headers
    )
    assert theft.status_code == 403
    admin = admin_headers(client, ctx)
    by_admin = client.post(
        "/api/v1/sites", json=site | {"port": unused_port(), "owner_id": other_id}, headers=admin
    )
    assert by_admin.status_code == 201 and by_admin.json()["owner_id"] == other_id
    nobody = client.post(
        "/api/v1/sites", json=site | {"port": unused_port(), "owner_id": 999_999}, headers=admin
    )
    assert nobody.status_code == 404
    consumer = register(client, role="consumer")
    r = client.post(
        "/api/v1/sites", json=site | {"port": unused_port()}, headers=login(client, consumer["email"])
    )
    assert r.status_code == 403
    mine = client.get("/api/v1/sites", headers=headers).json()
    assert {s["owner_id"] for s in mine} == {user_id} and len(mine) == 2
    assert len(client.get("/api/v1/sites", headers=admin).json()) == 3
    assert client.get(f"/api/v1/sites/{by_admin.json()['id']}", headers=headers).status_code == 404


def _poll(ctx: Context, cluster: ThreadedCluster, times: int, start: datetime) -> datetime:
    collector, loop, now = Collector(ctx.engine, FAST, on_fault=tell_owner), asyncio.new_event_loop(), start
    try:
        for _ in range(times):
            now += timedelta(seconds=FAST.poll_interval_s)
            cluster.sims[0].advance_to(now)
            loop.run_until_complete(collector.poll_once(now))
    finally:
        collector.close()
        loop.close()
    return now


def test_readings_faults_slots_and_supply_of_a_polled_site(
    client: TestClient, ctx: Context, sims: ThreadedCluster
) -> None:
    headers, _ = prosumer(client, ctx)
    site_id = client.post("/api/v1/sites", json=body(sims), headers=headers).json()["id"]
    now = _poll(ctx, sims, 3, BEFORE)
    sims.set_fault(0, "inverter_fault")
    now = _poll(ctx, sims, 40, now)
    rows = client.get(f"/api/v1/sites/{site_id}/readings?limit=5", headers=headers).json()
    assert len(rows) == 5 and set(rows[0]) == READING_FIELDS
    assert [r["ts"] for r in rows] == sorted((r["ts"] for r in rows), reverse=True)
    assert rows[0]["quality"] == "ok" and rows[0]["pv_w"] == 0 and rows[0]["soc_pct"] > 0
    since = (START + timedelta(seconds=10)).isoformat()
    until = (START + timedelta(seconds=30)).isoformat()
    window = client.get(
        f"/api/v1/sites/{site_id}/readings", params={"from": since, "to": until}, headers=headers
    )
    assert [r["ts"][:19] for r in window.json()] == ["2025-06-01T03:00:20", "2025-06-01T03:00:10"]
    detail = client.get(f"/api/v1/sites/{site_id}", headers=headers).json()
    assert detail["status"] == "fault" and detail["last_reading"]["ts"] == rows[0]["ts"]
    assert [f["kind"] for f in detail["open_faults"]] == ["inverter_fault"]
    faults = client.get(f"/api/v1/sites/{site_id}/faults", headers=headers).json()
    assert [f["kind"] for f in faults] == ["inverter_fault"] and faults[0]["closed_at"] is None
    with Session(ctx.engine) as session:  # the owner heard of it through the collector's fault listener
        events = session.exec(select(UserEvent).where(col(UserEvent.kind).startswith("site."))).all()
        assert [(e.kind, e.data["site_id"], e.data["fault"]) for e in events] == [
            ("site.fault_opened", site_id, "inverter_fault")
        ]

    aggregate_due(ctx.engine, FAST, now)
    slots = client.get(f"/api/v1/sites/{site_id}/slots", params={"from": START.isoformat()}, headers=headers)
    (slot,) = slots.json()
    assert slot["slot_start"].startswith("2025-06-01T03:00:00") and slot["status"] == "complete"
    assert slot["completeness"] == 1.0 and slot["pv_w"]["min"] == 0 and slot["anchored"] is False
    assert slot["load_wh"] > 0 and slot["soc_start_pct"] is not None

    # Supply: a new site has no history, so the clear-sky curve and the default load are used.
    supply = client.get(
        f"/api/v1/sites/{site_id}/supply", params={"slot_start": "2025-06-01T04:00:00Z"}, headers=headers
    )
    assert supply.status_code == 200, supply.text
    s = supply.json()
    assert s["pv_method"] == "clear_sky" and s["load_method"] == "default"
    assert s["expected_pv_wh"] > 0 and s["expected_load_wh"] == 125
    assert s["supply_wh"] == max(
        0, s["battery_above_reserve_wh"] + s["expected_pv_wh"] - s["expected_load_wh"]
    )
    bad = client.get(
        f"/api/v1/sites/{site_id}/supply", params={"slot_start": "2025-06-01T04:07:00Z"}, headers=headers
    )
    assert bad.status_code == 400


def test_supply_uses_the_same_slot_of_recent_days(ctx: Context, client: TestClient) -> None:
    _, user_id = prosumer(client, ctx)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    slot = now - timedelta(minutes=now.minute % 15) + timedelta(hours=1)
    with Session(ctx.engine) as s:
        site = site_row(user_id, "10.1.1.1", 502, name="h", reserve_soc_pct=20)
        s.add(site)
        s.flush()
        for day, (pv, load) in enumerate([(900, 300), (1100, 500), (1000, 401)], start=1):
            s.add(
                SlotEnergy(
                    site_id=site.id or 0,
                    slot_start=slot - timedelta(days=day),
                    slot_minutes=15,
                    status="complete",
                    good_polls=180,
                    expected_polls=180,
                    pv_wh=pv,
                    load_wh=load,
                    computed_at=utcnow(),
                )
            )
        s.commit()
        estimate = estimate_supply(s, site, slot, ctx.settings)
    assert estimate.pv_method == estimate.load_method == "history" and estimate.history_days == 3
    assert estimate.expected_pv_wh == 1000 and estimate.expected_load_wh == 401  # load rounded up
    assert estimate.battery_above_reserve_wh == 0  # no recent state of charge: counted as empty
    assert estimate.supply_wh == 599


def test_admins_disable_and_enable_sites(client: TestClient, ctx: Context) -> None:
    headers, _ = prosumer(client, ctx)
    site_id = client.post("/api/v1/sites", json=site(name="x"), headers=headers).json()["id"]
    assert client.post(f"/api/v1/admin/sites/{site_id}/disable", headers=headers).status_code == 403
    admin = admin_headers(client, ctx)
    r = client.post(f"/api/v1/admin/sites/{site_id}/disable", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "disabled" and not r.json()["enabled"]
    assert client.get(f"/api/v1/sites/{site_id}", headers=headers).json()["status"] == "disabled"
    events = client.get(f"/api/v1/sites/{site_id}/events", headers=headers).json()
    assert [e["kind"] for e in events][:2] == ["disabled", "registered"]
    r = client.post(f"/api/v1/admin/sites/{site_id}/enable", headers=admin)
    assert r.json()["enabled"] and r.json()["status"] == "offline"
    assert client.get("/api/v1/sites/999999", headers=admin).status_code == 404
    assert client.get("/api/v1/sites").status_code == 401


def test_ledger_slots_list_newest_first(client, ctx) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from sqlmodel import Session

    from app.core.security import utcnow
    from ess_collector.models import LedgerSlot

    base = utcnow().replace(minute=0, second=0, microsecond=0)
    with Session(ctx.engine) as s:
        for i in range(3):
            s.add(
                LedgerSlot(
                    slot_start=base - timedelta(minutes=15 * i),
                    slot_minutes=15,
                    root=None,
                    count=0,
                    pv_wh=0,
                    load_wh=0,
                    import_wh=0,
                    export_wh=0,
                    battery_charge_wh=0,
                    battery_discharge_wh=0,
                    status="empty",
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
        s.commit()
    rows = client.get("/api/v1/ledger/slots").json()
    assert [r["slot_start_unix"] for r in rows] == sorted(
        (r["slot_start_unix"] for r in rows), reverse=True
    ) and len(rows) == 3
    recent = client.get(
        "/api/v1/ledger/slots", params={"from": (base - timedelta(minutes=20)).isoformat()}
    ).json()
    assert len(recent) == 2
