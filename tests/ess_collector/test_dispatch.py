"""Dispatch against the real simulator over Modbus TCP: a commanded battery delivers what was sold (or
takes in what was bought), reverts at the slot's end, and a device that refuses or ignores is told apart.

The simulators run at speed 0 and the test steps them, so a 15-minute slot is exact. The forecast given
to the rule is perfect: a twin simulator (same seed and site, self-consumption) runs the slot first and
its PV and load counters are the expected PV and load. What the site then exports differs from what was
sold only by whole-Wh rounding: the export delta (1 Wh), the twin's PV and load deltas (1 Wh each) and
the command rounded up to whole W and 0.01 % of WChaMax (under 1 W over 15 minutes): 5 Wh in all.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from ess_collector import dispatch as dp
from ess_collector import sunspec
from ess_collector.dispatch import (
    ControlMode,
    DispatchCommand,
    DispatchStatus,
    WriteOutcome,
    WriteStatus,
    check_power,
    check_slot,
    decide,
    release,
    send_command,
)
from ess_collector.forecast import Battery
from ess_collector.reader import make_client, read_site
from ess_collector.simulator import SimulatorCluster, SiteSimulator, ThreadedCluster
from ess_collector.sunspec import Reading

HOST = "127.0.0.1"
SEED, SITE = 5, 2  # a 11.6 kWh / 5 kW battery at 77 % that charges 4.7 kW from PV at noon
NOON = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)  # 12:00 KST
EVENING = datetime(2025, 6, 1, 10, 30, tzinfo=UTC)  # 19:30 KST: no PV, the battery covers the load
SLOT_S = 900
TOLERANCE_WH = 5  # see the module docstring


@pytest.fixture
def noon() -> Iterator[ThreadedCluster]:
    with ThreadedCluster(SimulatorCluster(3, seed=SEED, start=NOON, speed=0, clouds=False)) as running:
        yield running


@pytest.fixture
def evening() -> Iterator[ThreadedCluster]:
    with ThreadedCluster(SimulatorCluster(3, seed=SEED, start=EVENING, speed=0, clouds=False)) as running:
        yield running


def read(port: int) -> Reading:
    """A reading timed by the device clock (the stepped simulation's time), as the check expects."""
    return replace(asyncio.run(read_site(HOST, port)), received_at=None)


def forecast_by_twin(sim: SiteSimulator, seconds: int = SLOT_S) -> tuple[int, int]:
    """(PV Wh, load Wh) the site will have over the next ``seconds``: a twin runs them first."""
    twin = SiteSimulator(sim.site_id, sim.seed, start=sim.time, config=sim.config)
    r0 = twin.reading
    twin.advance_to(sim.time + timedelta(seconds=seconds))
    r1 = twin.reading
    assert r0.pv_wh is not None and r1.pv_wh is not None and r0.load_wh is not None and r1.load_wh is not None
    return r1.pv_wh - r0.pv_wh, r1.load_wh - r0.load_wh


def battery_of(sim: SiteSimulator) -> Battery:
    cfg = sim.config
    return Battery(
        capacity_wh=cfg.capacity_wh,
        soc_pct=sim.reading.soc_pct,
        reserve_pct=cfg.reserve_pct,
        max_charge_w=cfg.max_charge_w,
        max_discharge_w=cfg.max_discharge_w,
        charge_efficiency_pct=cfg.efficiency_pct,
        discharge_efficiency_pct=cfg.efficiency_pct,
    )


def command_for(sim: SiteSimulator, *, sold_wh: int = 0, bought_wh: int = 0) -> DispatchCommand:
    pv, load = forecast_by_twin(sim)
    decision = decide(
        site_id=sim.site_id, slot_start=sim.time, slot_seconds=SLOT_S, now=sim.time, sold_wh=sold_wh,
        bought_wh=bought_wh, expected_pv_wh=pv, expected_load_wh=load, battery=battery_of(sim),
    )  # fmt: skip
    assert decision.command is not None, decision.reason
    assert decision.command.shortfall_wh == 0
    return decision.command


def send(port: int, command: DispatchCommand | None) -> WriteOutcome:
    async def go() -> WriteOutcome:
        client = make_client(HOST, port, timeout=2)
        try:
            return await (release(client) if command is None else send_command(client, command))
        finally:
            client.close()

    return asyncio.run(go())


def delta(before: Reading, after: Reading, name: str) -> int:
    a, b = getattr(before, name), getattr(after, name)
    assert a is not None and b is not None
    return int(b - a)


def assert_balanced(before: Reading, after: Reading) -> None:
    d = {n: delta(before, after, n) for n in ("pv_wh", "load_wh", "import_wh", "export_wh")}
    d |= {n: delta(before, after, n) for n in ("battery_charge_wh", "battery_discharge_wh")}
    assert d["load_wh"] == (
        d["pv_wh"] + d["import_wh"] - d["export_wh"] + d["battery_discharge_wh"] - d["battery_charge_wh"]
    )


def self_consumption_w(sim: SiteSimulator) -> int:
    cfg, r = sim.config, sim.reading
    assert r.load_w is not None and r.pv_w is not None
    return max(-cfg.max_charge_w, min(cfg.max_discharge_w, r.load_w - r.pv_w))


# ---- the rule (pure) ------------------------------------------------------------------------------------


def rule(battery: Battery, **kw: int) -> dp.DispatchDecision:
    args = {"sold_wh": 0, "bought_wh": 0, "expected_pv_wh": 0, "expected_load_wh": 0} | kw
    return decide(site_id=1, slot_start=NOON, slot_seconds=SLOT_S, now=NOON, battery=battery, **args)


HALF = Battery(10_000, Decimal(50), 10, 5_000, 5_000)


def test_rule_floor_is_what_was_sold_plus_own_load_minus_pv() -> None:
    d = rule(HALF, sold_wh=1_000, expected_pv_wh=300, expected_load_wh=100)
    assert d.command is not None and d.command.mode is ControlMode.FLOOR
    assert d.command.battery_w == (1_000 + 100 - 300) * 4 and d.command.shortfall_wh == 0
    assert d.command.seconds == SLOT_S and d.command.until == NOON + timedelta(seconds=SLOT_S)
    # a surplus larger than the sell: the battery may charge only what PV gives beyond the sell
    d = rule(HALF, sold_wh=200, expected_pv_wh=1_000)
    assert d.command is not None and d.command.battery_w == -3_200


def test_rule_no_command_when_pv_exports_it_anyway_or_nothing_is_contracted() -> None:
    full = replace(HALF, soc_pct=Decimal(100))  # a full battery cannot absorb the PV: it is exported
    assert rule(full, sold_wh=500, expected_pv_wh=1_000).command is None
    assert rule(HALF, expected_pv_wh=1_000).command is None
    empty = replace(HALF, soc_pct=Decimal(10))  # a buyer with an empty battery imports anyway
    assert rule(empty, bought_wh=300, expected_load_wh=500).command is None


def test_rule_caps_at_the_battery_and_says_what_is_missing() -> None:
    d = rule(HALF, sold_wh=2_000)  # 8 kW for 15 minutes from a 5 kW battery
    assert d.command is not None and d.command.battery_w == 5_000 and d.command.shortfall_wh == 750
    low = replace(HALF, soc_pct=Decimal(12))  # 200 Wh above the reserve, 190 Wh deliverable
    d = rule(low, sold_wh=1_000)
    assert d.command is not None and d.command.battery_w == 190 * 4 and d.command.shortfall_wh == 810


def test_rule_ceiling_for_a_buyer_and_mid_slot_correction() -> None:
    d = rule(HALF, bought_wh=300, expected_load_wh=500)
    assert d.command is not None and d.command.mode is ControlMode.CEILING and d.command.battery_w == 800
    d = rule(HALF, bought_wh=500, expected_pv_wh=200)  # bought with a PV surplus: charge from the grid
    assert d.command is not None and d.command.battery_w == -2_800
    later = decide(
        site_id=1, slot_start=NOON, slot_seconds=SLOT_S, now=NOON + timedelta(seconds=600), sold_wh=300,
        bought_wh=0, expected_pv_wh=0, expected_load_wh=0, battery=HALF,
    )  # fmt: skip
    assert later.command is not None and later.command.seconds == 300 and later.command.battery_w == 3_600
    with pytest.raises(ValueError):
        rule(HALF, sold_wh=-1)
    with pytest.raises(ValueError):
        decide(
            site_id=1, slot_start=NOON, slot_seconds=SLOT_S, now=NOON + timedelta(seconds=SLOT_S),
            sold_wh=1, bought_wh=0, expected_pv_wh=0, expected_load_wh=0, battery=HALF,
        )  # fmt: skip


def test_rate_register_rounds_towards_the_contract() -> None:
    assert dp.rate_raw(1_336, 5_000, -2, round_up=True) == 2_672  # 26.72 % of 5 kW, exactly
    assert dp.rate_raw(1_000, 3_100, -2, round_up=True) == 3_226  # 32.258... %
    assert dp.rate_raw(1_000, 3_100, -2, round_up=False) == 3_225
    assert dp.rate_raw(9_000, 5_000, -2, round_up=True) == 10_000  # clamped to 100 %
    assert dp.rate_raw(-9_000, 5_000, 0, round_up=False) == -100


# ---- against the simulator over Modbus TCP --------------------------------------------------------------


def test_commanded_discharge_exports_what_was_sold_then_reverts(noon: ThreadedCluster) -> None:
    sim, port = noon.sims[SITE], noon.ports[SITE]
    sold = 1_500
    # without a command the battery soaks up the PV: the site would export almost nothing
    pv, load = forecast_by_twin(sim)
    assert pv - load - sim.config.max_charge_w * SLOT_S // 3600 < 0
    command = command_for(sim, sold_wh=sold)
    assert command.mode is ControlMode.FLOOR and command.battery_w > 0
    outcome = send(port, command)
    assert outcome.status is WriteStatus.ACCEPTED and outcome.readback_ok
    assert outcome.readback is not None and outcome.readback.rvrt_tms == SLOT_S
    before = read(port)
    assert check_power(command, before) is DispatchStatus.FOLLOWED
    assert before.battery_w is not None and before.battery_w >= command.battery_w
    sim.advance_to(NOON + timedelta(seconds=SLOT_S))
    after = read(port)
    exported = delta(before, after, "export_wh")
    assert abs(exported - sold) <= TOLERANCE_WH, exported
    assert_balanced(before, after)
    result = check_slot(command, outcome, before, after, reserve_pct=sim.config.reserve_pct)
    assert result.status is DispatchStatus.FOLLOWED, result.detail
    assert result.export_wh == exported and result.battery_wh is not None
    assert result.battery_wh >= result.commanded_wh
    # the reversion timeout ran out exactly at the slot's end: back to self-consumption
    assert sim.controls.mod == 0
    sim.step(60)
    assert read(port).battery_w == self_consumption_w(sim) < 0


def test_ceiling_makes_a_buyer_import_what_it_bought(evening: ThreadedCluster) -> None:
    sim, port = evening.sims[SITE], evening.ports[SITE]
    bought = 300
    command = command_for(sim, bought_wh=bought)
    assert command.mode is ControlMode.CEILING
    outcome = send(port, command)
    before = read(port)
    sim.advance_to(EVENING + timedelta(seconds=SLOT_S))
    after = read(port)
    imported = delta(before, after, "import_wh")
    assert abs(imported - bought) <= TOLERANCE_WH, imported
    assert_balanced(before, after)
    assert check_slot(command, outcome, before, after).status is DispatchStatus.FOLLOWED


def test_release_returns_to_self_consumption_at_once(noon: ThreadedCluster) -> None:
    sim, port = noon.sims[SITE], noon.ports[SITE]
    send(port, command_for(sim, sold_wh=1_500))
    sim.step(120)
    assert read(port).battery_w == sim.battery_w > 0
    outcome = send(port, None)
    assert outcome.status is WriteStatus.ACCEPTED and outcome.readback_ok
    assert outcome.readback is not None and outcome.readback.mod == 0
    assert read(port).battery_w == self_consumption_w(sim) < 0


def test_a_refusing_device_is_refused(noon: ThreadedCluster) -> None:
    sim, port = noon.sims[SITE], noon.ports[SITE]
    noon.set_fault(SITE, "control_refused")
    command = command_for(sim, sold_wh=1_500)
    outcome = send(port, command)
    assert outcome.status is WriteStatus.REFUSED and outcome.exception_code == 4
    before = read(port)
    sim.advance_to(NOON + timedelta(seconds=SLOT_S))
    result = check_slot(command, outcome, before, read(port))
    assert result.status is DispatchStatus.REFUSED
    assert sim.controls.mod == 0  # nothing was applied


def test_a_device_that_accepts_but_does_not_follow_is_caught(noon: ThreadedCluster) -> None:
    sim, port = noon.sims[SITE], noon.ports[SITE]
    noon.set_fault(SITE, "control_ignored")
    command = command_for(sim, sold_wh=1_500)
    outcome = send(port, command)
    assert outcome.status is WriteStatus.ACCEPTED and outcome.readback_ok  # it even reads back fine
    before = read(port)
    assert check_power(command, before) is DispatchStatus.NOT_FOLLOWED
    sim.advance_to(NOON + timedelta(seconds=SLOT_S))
    after = read(port)
    result = check_slot(command, outcome, before, after, reserve_pct=sim.config.reserve_pct)
    assert result.status is DispatchStatus.NOT_FOLLOWED, result.detail
    assert result.export_wh is not None and result.export_wh < 1_500 // 10
    assert_balanced(before, after)


def test_writes_outside_the_writable_storage_points_are_refused(noon: ThreadedCluster) -> None:
    sim, port = noon.sims[SITE], noon.ports[SITE]
    m124 = sunspec.STORAGE

    async def write(address: int, values: list[int]) -> int | None:
        client = AsyncModbusTcpClient(HOST, port=port, timeout=2)
        await client.connect()
        try:
            rr = await client.write_registers(address, values, device_id=1)
            return rr.exception_code if rr.isError() else None
        finally:
            client.close()

    def code(address: int, values: list[int]) -> int | None:
        return asyncio.run(write(address, values))

    assert code(m124["ChaState"].address, [500]) == 2  # read-only in model 124
    assert code(m124["WChaMax_SF"].address, [0]) == 2  # scale factors are read-only
    assert code(m124["WChaGra"].address, [10]) == 2  # writable in the model, not implemented here
    assert code(sunspec.MODELS[103]["W"].address, [0]) == 2  # another model
    assert code(sunspec.MODELS[802]["SoCRsvMin"].address, [0]) == 2  # writable in 802, not served
    assert code(sunspec.BASE - 10, [0]) == 2  # outside the map
    # a write that spans a read-only register changes nothing, not even its writable part
    assert code(m124["StorCtl_Mod"].address, [1, 0, 50]) == 2
    assert sim.controls.mod == 0 and sim.controls.min_rsv_pct == sim.config.reserve_pct
    # values the point cannot take
    assert code(m124["InWRte"].address, [10_001]) == 3  # above 100.00 %
    assert code(m124["StorCtl_Mod"].address, [4]) == 3  # only bits 0 and 1 exist
    assert code(m124["WChaMax"].address, [sim.config.max_charge_w + 1]) == 3
    assert code(m124["InOutWRte_RmpTms"].address, [30]) == 3  # setpoints apply at once
    assert sim.controls == sim.default_controls()
    # and what is writable is written
    assert code(m124["MinRsvPct"].address, [30]) is None
    assert read(port).soc_pct is not None and sim.controls.min_rsv_pct == 30


def test_pysunspec2_scans_and_commands_the_simulator(noon: ThreadedCluster, tmp_path: Path) -> None:
    """The reference SunSpec client reads the controls and writes a forced discharge that is followed."""
    sunspec2_device = pytest.importorskip("sunspec2.device")
    from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

    sim, port = noon.sims[SITE], noon.ports[SITE]
    (tmp_path / "model_64900.json").write_text(json.dumps(sunspec.VENDOR_MODEL_DEF))
    old_path = sunspec2_device.get_model_defs_path()
    sunspec2_device.set_model_defs_path([*old_path, str(tmp_path)])
    try:
        dev = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr=HOST, ipport=port, timeout=2)
        try:
            dev.scan()
            m124 = dev.models[124][0]
            assert not m124.error_info
            assert (m124.WChaMax.cvalue, m124.StorCtl_Mod.cvalue, m124.InWRte.cvalue) == (
                sim.config.max_charge_w,
                0,
                100,
            )
            m124.InWRte.cvalue = -40  # at least 40 % of WChaMax out of the battery
            m124.InOutWRte_RvrtTms.cvalue = 600
            m124.StorCtl_Mod.cvalue = 1
            m124.write()
            m124.read()
            assert (m124.StorCtl_Mod.cvalue, m124.InWRte.cvalue) == (1, -40)
        finally:
            dev.close()
    finally:
        sunspec2_device.set_model_defs_path(old_path)
    assert sim.battery_w == sim.config.max_charge_w * 40 // 100


def test_check_without_counters_or_answer_is_unknown() -> None:
    command = DispatchCommand(
        site_id=1, slot_start=NOON, issued_at=NOON, until=NOON + timedelta(seconds=SLOT_S), seconds=SLOT_S,
        mode=ControlMode.FLOOR, battery_w=1_000, target_export_wh=250, target_import_wh=0, shortfall_wh=0,
    )  # fmt: skip
    lost = WriteOutcome(WriteStatus.UNREACHABLE, "no answer")
    assert check_slot(command, lost, Reading(), Reading()).status is DispatchStatus.UNKNOWN
    written = sunspec.StorageControls(mod=1, in_w_rte=-2000, out_w_rte=10000, rvrt_tms=SLOT_S)
    ok = WriteOutcome(WriteStatus.ACCEPTED, "", None, written, written)
    assert check_slot(command, ok, Reading(), Reading()).status is DispatchStatus.UNKNOWN
    other = WriteOutcome(WriteStatus.ACCEPTED, "", None, written, replace(written, mod=0))
    assert check_slot(command, other, Reading(), Reading()).status is DispatchStatus.NOT_FOLLOWED
    assert check_power(command, Reading()) is DispatchStatus.UNKNOWN


def test_dispatch_and_forecast_do_not_import_the_service() -> None:
    code = (
        "import sys, ess_collector.dispatch, ess_collector.forecast, ess_collector.simulator; "
        "print(sorted(m for m in sys.modules if m == 'app' or m.startswith('app.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
