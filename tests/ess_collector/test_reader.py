"""The reader against simulated sites over real TCP on 127.0.0.1, fault switches included."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ess_collector import sunspec
from ess_collector.reader import (
    BadMap,
    SiteBusy,
    SiteConnectionPool,
    SiteTimeout,
    SiteUnreachable,
    make_client,
    read_site,
)
from ess_collector.simulator import SimulatorCluster, ThreadedCluster
from ess_collector.sunspec import Reading

START = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)  # 12:00 KST: PV, load and battery all active
HOST = "127.0.0.1"


@pytest.fixture
def cluster() -> Iterator[ThreadedCluster]:
    """Two sites with time stepped by the test (speed 0)."""
    with ThreadedCluster(SimulatorCluster(2, seed=11, start=START, speed=0)) as running:
        yield running


def read(port: int, timeout: float = 1.0) -> Reading:
    return asyncio.run(read_site(HOST, port, timeout=timeout))


def test_reader_decodes_what_the_simulator_serves(cluster: ThreadedCluster) -> None:
    for sim, port in zip(cluster.sims, cluster.ports, strict=True):
        sim.step(90)
        before = datetime.now(UTC)
        r = read(port)
        assert r == sim.reading  # every field, exactly
        assert r.received_at is not None and r.received_at >= before
        assert r.pv_w and r.load_w and r.soc_pct is not None and r.capacity_wh
    assert cluster.ports[0] != cluster.ports[1]


def test_pool_keeps_one_connection_per_site(cluster: ThreadedCluster) -> None:
    server = cluster.cluster.servers[0]

    async def poll() -> list[int | None]:
        async with SiteConnectionPool(timeout=1.0) as pool:
            beats = []
            for _ in range(5):
                cluster.sims[0].step(1)
                beats.append((await pool.read(HOST, cluster.ports[0])).heartbeat)
                assert server._server is not None and len(server.connections) == 1
            results = await pool.read_many([(HOST, p) for p in cluster.ports])
            assert all(isinstance(x, Reading) for x in results) and len(pool) == 2
            return beats

    beats = asyncio.run(poll())
    assert beats == [beats[0] + i for i in range(5)]


def test_realtime_clock_advances_device_time_and_heartbeat() -> None:
    with ThreadedCluster(SimulatorCluster(1, start=START, speed=3600)) as c:

        async def two_reads() -> tuple[Reading, Reading]:
            async with SiteConnectionPool() as pool:
                a = await pool.read(HOST, c.ports[0])
                await asyncio.sleep(0.1)
                return a, await pool.read(HOST, c.ports[0])

        a, b = asyncio.run(two_reads())
    assert a.device_time and b.device_time and a.heartbeat is not None and b.heartbeat is not None
    assert timedelta(seconds=359) <= b.device_time - a.device_time < timedelta(days=1)  # 0.1 s x 3600
    assert b.heartbeat > a.heartbeat
    assert b.pv_wh is not None and a.pv_wh is not None and b.pv_wh > a.pv_wh


def test_frozen_stops_heartbeat_and_values(cluster: ThreadedCluster) -> None:
    port, sim = cluster.ports[0], cluster.sims[0]
    sim.step(5)
    a = read(port)
    cluster.set_fault(0, "frozen")
    sim.step(300)
    b = read(port)
    assert b == a and b.heartbeat == a.heartbeat and b.device_time == a.device_time
    cluster.set_fault(0, "frozen", False)
    sim.step(1)
    c = read(port)
    assert c.heartbeat != a.heartbeat and c.device_time == a.device_time + timedelta(seconds=301)


def test_slow_responses_time_out_then_recover(cluster: ThreadedCluster) -> None:
    port = cluster.ports[0]
    cluster.set_fault(0, "slow", delay_s=0.5)

    async def scenario() -> Reading:
        client = make_client(HOST, port, timeout=0.2)
        try:
            t0 = time.monotonic()
            with pytest.raises(SiteTimeout):
                await read_site(client, timeout=0.2)
            assert 0.35 < time.monotonic() - t0 < 3.0  # two timeouts: the first try and one retry
            cluster.set_fault(0, "slow", False)
            return await read_site(client, timeout=0.5)  # the same client reconnects by itself
        finally:
            client.close()

    assert asyncio.run(scenario()) == cluster.sims[0].reading


def test_busy_is_reported_as_site_busy(cluster: ThreadedCluster) -> None:
    cluster.set_fault(1, "busy")
    with pytest.raises(SiteBusy):
        read(cluster.ports[1])
    read(cluster.ports[0])  # the neighbour is unaffected
    cluster.set_fault(1, "busy", False)
    assert read(cluster.ports[1]) == cluster.sims[1].reading


def test_counter_reset_makes_counters_go_down(cluster: ThreadedCluster) -> None:
    a = read(cluster.ports[0])
    cluster.set_fault(0, "counter_reset")
    b = read(cluster.ports[0])
    for key in ("pv_wh", "load_wh", "import_wh", "export_wh", "battery_charge_wh", "battery_discharge_wh"):
        assert getattr(b, key) < getattr(a, key), key
        assert getattr(b, key) is not None  # near zero, but never the acc32 "not implemented" 0


def test_spike_is_out_of_range_for_some_polls(cluster: ThreadedCluster) -> None:
    sim, port = cluster.sims[0], cluster.ports[0]
    cluster.set_fault(0, "spike", polls=2)
    pvs = [read(port).pv_w for _ in range(3)]
    assert pvs[:2] == [sim.spike_w] * 2 and sim.spike_w > 1.2 * sim.config.pv_peak_w
    assert pvs[2] == sim.reading.pv_w


def test_inverter_and_battery_faults(cluster: ThreadedCluster) -> None:
    cluster.set_fault(0, "inverter_fault")
    r = read(cluster.ports[0])
    assert r.inverter_state == 7 and r.inverter_alarms is not None and r.inverter_alarms & (1 << 7)
    assert r.alarm_code == 1 and r.pv_w == 0
    cluster.set_fault(1, "battery_fault")
    r = read(cluster.ports[1])
    assert r.battery_state == 99 and r.battery_alarms and r.alarm_code == 2 and r.battery_w == 0


def test_offline_refuses_connections_then_comes_back(cluster: ThreadedCluster) -> None:
    port = cluster.ports[0]

    async def scenario() -> None:
        async with SiteConnectionPool(timeout=0.5) as pool:
            await pool.read(HOST, port)
            await asyncio.to_thread(cluster.set_fault, 0, "offline")
            with pytest.raises(SiteUnreachable) as err:
                await pool.read(HOST, port)  # the open connection was dropped, reconnect refused
            assert not isinstance(err.value, SiteTimeout)
            with pytest.raises(SiteUnreachable):
                await read_site(HOST, port, timeout=0.5)
            await asyncio.to_thread(cluster.set_fault, 0, "offline", False)
            assert await pool.read(HOST, port) == cluster.sims[0].reading  # same port again

    asyncio.run(scenario())
    assert cluster.ports[0] == port


def test_offline_set_directly_on_the_simulator_takes_effect(cluster: ThreadedCluster) -> None:
    cluster.sims[1].set_fault("offline")  # the way a control endpoint without the cluster would do it
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            read(cluster.ports[1], timeout=0.3)
        except SiteUnreachable:
            break
        time.sleep(0.02)
    else:
        pytest.fail("site stayed online")
    cluster.sims[1].set_fault("offline", False)
    time.sleep(0.1)
    assert read(cluster.ports[1]) == cluster.sims[1].reading


def test_nothing_listening_is_unreachable() -> None:
    with ThreadedCluster(SimulatorCluster(1, start=START, speed=0)) as c:
        port = c.ports[0]
    with pytest.raises(SiteUnreachable):
        read(port, timeout=0.3)


def test_foreign_map_is_bad_map(cluster: ThreadedCluster) -> None:
    sim = cluster.sims[0]
    sim._image = [0] * sunspec.MAP_LEN  # a device that answers, but not with SunSpec
    with pytest.raises(BadMap):
        read(cluster.ports[0])


def test_pysunspec2_scans_the_simulator(cluster: ThreadedCluster, tmp_path: Path) -> None:
    sunspec2_device = pytest.importorskip("sunspec2.device")
    from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

    (tmp_path / "model_64900.json").write_text(json.dumps(sunspec.VENDOR_MODEL_DEF))
    old_path = sunspec2_device.get_model_defs_path()
    sunspec2_device.set_model_defs_path([*old_path, str(tmp_path)])
    try:
        cluster.sims[0].step(30)
        ours = read(cluster.ports[0])
        dev = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr=HOST, ipport=cluster.ports[0], timeout=2)
        try:
            dev.scan()
        finally:
            dev.close()
    finally:
        sunspec2_device.set_model_defs_path(old_path)
    assert [k for k in dev.models if isinstance(k, int)] == [1, 103, 203, 124, 802, 64900]
    assert all(not dev.models[m][0].error_info for m in (1, 103, 203, 124, 802, 64900))
    m103, m203, m124, m802, vendor = (dev.models[m][0] for m in (103, 203, 124, 802, 64900))
    assert dev.models[1][0].SN.cvalue == cluster.sims[0].info.serial
    assert (m103.W.cvalue, m103.WH.cvalue, m103.St.cvalue, m103.Evt1.cvalue) == (
        ours.pv_w,
        ours.pv_wh,
        ours.inverter_state,
        ours.inverter_alarms,
    )
    assert (m203.W.cvalue, m203.TotWhImp.cvalue, m203.TotWhExp.cvalue) == (
        ours.grid_w,
        ours.import_wh,
        ours.export_wh,
    )
    assert m124.ChaState.cvalue == pytest.approx(float(ours.soc_pct or -1)) and m124.ChaSt.cvalue == 4
    assert m802.SoC.cvalue == pytest.approx(float(ours.soc_pct or -1))
    assert (m802.WHRtg.cvalue, m802.W.cvalue, m802.State.cvalue) == (
        ours.capacity_wh,
        ours.battery_w,
        ours.battery_state,
    )
    assert (vendor.LoadW.cvalue, vendor.LoadWh.cvalue, vendor.Hb.cvalue, vendor.Tms.cvalue) == (
        ours.load_w,
        ours.load_wh,
        ours.heartbeat,
        int(ours.device_time.timestamp()) if ours.device_time else None,
    )
    assert (vendor.BatChaWh.cvalue, vendor.BatDisChaWh.cvalue) == (
        ours.battery_charge_wh,
        ours.battery_discharge_wh,
    )


def test_base_port_in_use_fails_cleanly(cluster: ThreadedCluster) -> None:
    clash = ThreadedCluster(SimulatorCluster(1, start=START, speed=0, base_port=cluster.ports[0]))
    with pytest.raises(RuntimeError):
        clash.start()
    assert [t for t in threading.enumerate() if t.name == "ess-simulator"] == [cluster._thread]
    assert read(cluster.ports[0]) == cluster.sims[0].reading  # the first cluster is untouched
