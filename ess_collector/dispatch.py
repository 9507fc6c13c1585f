"""Dispatch: a site's battery delivers what the site sold in a slot (and leaves room for what it bought),
commanded through SunSpec model 124 storage controls, and checked afterwards.

Three parts, each usable alone:

- ``decide`` (pure): from what is contracted for the rest of the slot, the expected PV and load over
  that time and the battery's state and limits, the battery power the contract needs, or no command
  when self-consumption delivers it anyway;
- ``send_command`` / ``release`` (async, pymodbus): write the command over Modbus TCP, with the
  reversion timeout set to the end of the slot, so the device falls back to self-consumption by itself
  even if nobody releases it; ``release`` does that at once;
- ``check_slot`` / ``check_power`` (pure): tell ``followed`` / ``refused`` / ``not_followed`` from the
  write's answer, the controls read back, and the battery's counters (or power) the device reported.

How the controls are used (SunSpec model 124, as Fronius hybrid inverters implement it): rates are
percentages of ``WChaMax`` in units of ``10^InOutWRte_SF``. ``StorCtl_Mod`` bit 0 keeps the battery's
power (+ = discharge) at or above ``-InWRte``, bit 1 at or below ``OutWRte``. So a seller's command is a
*floor* (bit 0, negative InWRte = discharge at least that much; the battery still covers household peaks
above it, so the export is at least the floor minus the household's deficit), and a buyer's command is a
*ceiling* (bit 1: the battery covers at most that much of the household's deficit, so the site imports
what it bought). Rates are rounded towards delivering the contract.

Nothing here imports the service: times, slot lengths and results are plain values and dataclasses.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from .forecast import Battery
from .sunspec import (
    STORAGE,
    STORAGE_BLOCK,
    STORCTL_CHARGE,
    STORCTL_DISCHARGE,
    MapError,
    Reading,
    StorageControls,
    decode_controls,
)

# one write covers OutWRte, InWRte, InOutWRte_WinTms, InOutWRte_RvrtTms (consecutive, all writable)
RATES_ADDRESS = STORAGE["OutWRte"].address
MODE_ADDRESS = STORAGE["StorCtl_Mod"].address
_RATES = ("OutWRte", "InWRte", "InOutWRte_WinTms", "InOutWRte_RvrtTms")
assert [STORAGE[p].address for p in _RATES] == list(range(RATES_ADDRESS, RATES_ADDRESS + 4))
MAX_REVERT_S = 0xFFFE  # uint16; 0xFFFF is "not implemented"


class ControlMode(StrEnum):
    FLOOR = "floor"  # battery power at least battery_w: a seller exports what it sold
    CEILING = "ceiling"  # battery power at most battery_w: a buyer imports what it bought


@dataclass(frozen=True)
class DispatchCommand:
    site_id: int
    slot_start: datetime
    issued_at: datetime
    until: datetime  # the slot's end: the device reverts to self-consumption by itself then
    seconds: int  # from issued_at to until, rounded up: the reversion timeout written
    mode: ControlMode
    battery_w: int  # + = discharge, - = charge
    target_export_wh: int  # what the contract needs exported from issued_at to until
    target_import_wh: int  # ... and imported
    shortfall_wh: int  # the part the battery cannot cover within its power and energy limits


@dataclass(frozen=True)
class DispatchDecision:
    command: DispatchCommand | None
    required_w: int  # the battery power the contract needs over the rest of the slot (+ = discharge)
    reason: str


def remaining_seconds(now: datetime, slot_start: datetime, slot_seconds: int) -> int:
    """Whole seconds from ``now`` to the slot's end (at least 1); ValueError outside the slot."""
    end = slot_start + timedelta(seconds=slot_seconds)
    if not slot_start <= now < end:
        raise ValueError(f"{now.isoformat()} is not inside the slot starting {slot_start.isoformat()}")
    return max(1, math.ceil((end - now).total_seconds()))


def decide(
    *,
    site_id: int,
    slot_start: datetime,
    slot_seconds: int,
    now: datetime,
    sold_wh: int,
    bought_wh: int,
    expected_pv_wh: int,
    expected_load_wh: int,
    battery: Battery,
) -> DispatchDecision:
    """The command for the rest of a slot. Energies are from ``now`` to the slot's end: at the slot's
    start the whole contract and the slot's expected PV and load, later what is still to be delivered
    (so the caller may correct the command during the slot from what the meter shows)."""
    if min(sold_wh, bought_wh, expected_pv_wh, expected_load_wh) < 0:
        raise ValueError("energies must not be negative")
    seconds = remaining_seconds(now, slot_start, slot_seconds)
    until = slot_start + timedelta(seconds=slot_seconds)
    if sold_wh == 0 and bought_wh == 0:
        return DispatchDecision(None, 0, "nothing contracted")
    net = sold_wh - bought_wh  # + = the site must export, - = import
    required_wh = net + expected_load_wh - expected_pv_wh  # battery energy out (+) or in (-)
    stored, reserve = battery.stored_wh, battery.reserve_wh
    deliverable_wh = max(0, stored - reserve) * battery.discharge_efficiency_pct // 100
    room_wh = max(0, battery.capacity_wh - stored) * 100 // battery.charge_efficiency_pct
    discharge_cap = min(battery.max_discharge_w, deliverable_wh * 3600 // seconds)
    charge_cap = min(battery.max_charge_w, room_wh * 3600 // seconds)
    if net >= 0:
        mode, need = ControlMode.FLOOR, -(-required_wh * 3600 // seconds)  # up: at least what was sold
        if need <= -charge_cap:
            return DispatchDecision(None, need, "PV alone exports what was sold: no command needed")
        power = min(need, discharge_cap)
        why = f"discharge at least {power} W" if power >= 0 else f"charge at most {-power} W"
    else:
        mode, need = ControlMode.CEILING, required_wh * 3600 // seconds  # down: what was bought comes in
        if need >= discharge_cap:
            return DispatchDecision(None, need, "the site imports what it bought anyway: no command needed")
        power = max(need, -charge_cap)
        why = f"discharge at most {power} W" if power >= 0 else f"charge at least {-power} W"
    short = abs(need - power) * seconds // 3600
    cmd = DispatchCommand(
        site_id=site_id,
        slot_start=slot_start,
        issued_at=now,
        until=until,
        seconds=seconds,
        mode=mode,
        battery_w=power,
        target_export_wh=max(net, 0),
        target_import_wh=max(-net, 0),
        shortfall_wh=short,
    )
    if short:
        why += f"; {short} Wh beyond the battery's limits"
    return DispatchDecision(cmd, need, why)


# ---- writing over Modbus TCP ---------------------------------------------------------------------------


class WriteStatus(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"  # a Modbus exception, or no rate control on the device
    UNREACHABLE = "unreachable"  # no answer (timeout, connection lost)


@dataclass(frozen=True)
class WriteOutcome:
    status: WriteStatus
    detail: str
    exception_code: int | None = None
    written: StorageControls | None = None  # what was written (raw register values)
    readback: StorageControls | None = None  # what the device reads back afterwards

    @property
    def readback_ok(self) -> bool:
        """The device reads back the mode, rates and timeout that were written."""
        w, r = self.written, self.readback
        if w is None or r is None:
            return False
        return (w.mod, w.in_w_rte, w.out_w_rte, w.rvrt_tms) == (r.mod, r.in_w_rte, r.out_w_rte, r.rvrt_tms)


class ControlRefused(Exception):
    """The device refused a control request (Modbus exception ``code``) or cannot take one."""

    def __init__(self, detail: str, code: int | None = None) -> None:
        super().__init__(detail)
        self.code = code


def rate_raw(power_w: int, w_cha_max_w: int, rate_sf: int, *, round_up: bool) -> int:
    """``power_w`` as a rate register value (percent of WChaMax x 10^-SF), clamped to +-100 %."""
    exact = Fraction(power_w * 100, w_cha_max_w) / Fraction(10) ** rate_sf
    full = math.floor(Fraction(100) / Fraction(10) ** rate_sf)
    raw = math.ceil(exact) if round_up else math.floor(exact)
    return max(-full, min(full, raw, 0x7FFF))


def command_controls(command: DispatchCommand, controls: StorageControls) -> StorageControls:
    """The controls that carry out ``command`` on a device that reads back ``controls``."""
    w_max, sf = controls.w_cha_max_w, controls.rate_sf
    if not w_max or sf is None or not -10 <= sf <= 10:
        raise ControlRefused("the device offers no rate control (WChaMax or InOutWRte_SF not implemented)")
    full = rate_raw(w_max, w_max, sf, round_up=False)
    revert = min(max(1, command.seconds), MAX_REVERT_S)
    if command.mode is ControlMode.FLOOR:  # power >= -InWRte: InWRte rounded down
        in_rte = -rate_raw(command.battery_w, w_max, sf, round_up=True)
        return StorageControls(mod=STORCTL_CHARGE, in_w_rte=in_rte, out_w_rte=full, rvrt_tms=revert)
    out_rte = rate_raw(command.battery_w, w_max, sf, round_up=False)  # power <= OutWRte
    return StorageControls(mod=STORCTL_DISCHARGE, in_w_rte=full, out_w_rte=out_rte, rvrt_tms=revert)


async def read_controls(client: AsyncModbusTcpClient, device_id: int = 1) -> StorageControls:
    """Model 124 as the device reports it now."""
    start, count = STORAGE_BLOCK
    rr = await client.read_holding_registers(start, count=count, device_id=device_id)
    if rr.isError():
        raise ControlRefused(f"reading model 124: Modbus exception {rr.exception_code}", rr.exception_code)
    try:
        return decode_controls(rr.registers)
    except MapError as exc:
        raise ControlRefused(str(exc)) from None


async def _write(client: AsyncModbusTcpClient, address: int, values: list[int], device_id: int) -> None:
    rr = await client.write_registers(address, [v & 0xFFFF for v in values], device_id=device_id)
    if rr.isError():
        code = getattr(rr, "exception_code", None)
        raise ControlRefused(f"write at {address}: Modbus exception {code}", code)


async def _apply(
    client: AsyncModbusTcpClient, want: StorageControls | None, device_id: int, *, mode_first: bool
) -> WriteOutcome:
    written = want
    try:
        if not client.connected and not await client.connect():
            return WriteOutcome(WriteStatus.UNREACHABLE, "cannot connect")
        if written is None:  # release: read the scale factor to write 100 %
            c = await read_controls(client, device_id)
            full = rate_raw(1, 1, c.rate_sf, round_up=False) if c.rate_sf is not None else 0
            written = StorageControls(mod=0, in_w_rte=full, out_w_rte=full, rvrt_tms=0)
        rates = [written.out_w_rte or 0, written.in_w_rte or 0, 0, written.rvrt_tms or 0]
        # Engaging: rates and timeout first, then the mode, so the device never runs a mode with the
        # old rates and the timer runs from the mode write. Releasing: the mode first.
        if mode_first:
            await _write(client, MODE_ADDRESS, [written.mod or 0], device_id)
        await _write(client, RATES_ADDRESS, rates, device_id)
        if not mode_first:
            await _write(client, MODE_ADDRESS, [written.mod or 0], device_id)
        readback = await read_controls(client, device_id)
    except ControlRefused as exc:
        return WriteOutcome(WriteStatus.REFUSED, str(exc), exc.code, written)
    except (TimeoutError, ModbusIOException, ConnectionException) as exc:
        client.close()
        return WriteOutcome(WriteStatus.UNREACHABLE, f"no answer: {exc}", None, written)
    except ModbusException as exc:
        return WriteOutcome(WriteStatus.REFUSED, str(exc), None, written)
    return WriteOutcome(WriteStatus.ACCEPTED, "written and read back", None, written, readback)


async def send_command(
    client: AsyncModbusTcpClient, command: DispatchCommand, *, device_id: int = 1
) -> WriteOutcome:
    """Write ``command``: read WChaMax and the rate scale factor, write rates + reversion timeout (to
    the slot's end), then the mode, and read the controls back. Modbus TCP clients must not interleave
    requests on one connection: hold the site's connection lock (the collector's) around this."""
    try:
        if not client.connected and not await client.connect():
            return WriteOutcome(WriteStatus.UNREACHABLE, "cannot connect")
        want = command_controls(command, await read_controls(client, device_id))
    except ControlRefused as exc:
        return WriteOutcome(WriteStatus.REFUSED, str(exc), exc.code)
    except (TimeoutError, ModbusIOException, ConnectionException) as exc:
        client.close()
        return WriteOutcome(WriteStatus.UNREACHABLE, f"no answer: {exc}")
    return await _apply(client, want, device_id, mode_first=False)


async def release(client: AsyncModbusTcpClient, *, device_id: int = 1) -> WriteOutcome:
    """Back to self-consumption now: mode off, rates 100 %, no reversion timer."""
    return await _apply(client, None, device_id, mode_first=True)


async def send_with_timeout(
    client: AsyncModbusTcpClient, command: DispatchCommand | None, *, timeout_s: float, device_id: int = 1
) -> WriteOutcome:
    """``send_command`` (or ``release`` for None) bounded by ``timeout_s`` in all."""
    try:
        async with asyncio.timeout(timeout_s):
            if command is None:
                return await release(client, device_id=device_id)
            return await send_command(client, command, device_id=device_id)
    except TimeoutError:
        client.close()
        return WriteOutcome(WriteStatus.UNREACHABLE, f"no answer within {timeout_s} s")


# ---- checking --------------------------------------------------------------------------------------------


class DispatchStatus(StrEnum):
    FOLLOWED = "followed"
    REFUSED = "refused"  # the device answered the write with an exception (or has no rate control)
    NOT_FOLLOWED = "not_followed"  # it accepted, but reads back other controls or its battery did not obey
    UNKNOWN = "unknown"  # no answer or no counters: nothing can be said (the collector's comm faults tell)


@dataclass(frozen=True)
class DispatchResult:
    status: DispatchStatus
    detail: str
    seconds: float = 0.0  # the measured interval
    commanded_wh: int = 0  # battery_w x seconds: the floor (or ceiling) of the battery's net output
    battery_wh: int | None = None  # measured net battery output (discharge - charge)
    export_wh: int | None = None
    import_wh: int | None = None


# Counters are whole Wh, floored by the device: a delta is off by up to 1 Wh, and the battery's net
# output is the difference of two deltas (2 Wh). A real inverter ramps to a new setpoint in a few
# seconds and the write lands some time after the reading that opens the interval: 3 % of the
# commanded energy (27 s of a 15-minute slot) covers both.
TOLERANCE_WH = 2
TOLERANCE_PCT = Decimal(3)


def _span(before: Reading, after: Reading) -> float | None:
    for a, b in ((before.received_at, after.received_at), (before.device_time, after.device_time)):
        if a is not None and b is not None:
            return (b - a).total_seconds()
    return None


def check_slot(
    command: DispatchCommand,
    write: WriteOutcome,
    before: Reading,
    after: Reading,
    *,
    reserve_pct: Decimal | int | None = None,
    tolerance_wh: int = TOLERANCE_WH,
    tolerance_pct: Decimal = TOLERANCE_PCT,
) -> DispatchResult:
    """Judge a command from the readings that bracket the commanded interval (the first after the write,
    the last before the slot's end): the battery's net output over it must reach the floor (or stay
    under the ceiling). A battery that reached its reserve (or full charge) followed as far as it could."""
    if write.status is WriteStatus.REFUSED:
        return DispatchResult(DispatchStatus.REFUSED, write.detail)
    if write.status is WriteStatus.UNREACHABLE:
        return DispatchResult(DispatchStatus.UNKNOWN, write.detail)
    if not write.readback_ok:
        return DispatchResult(
            DispatchStatus.NOT_FOLLOWED, "the device reads back other controls than written"
        )
    counters: tuple[int | None, ...] = (
        before.battery_discharge_wh,
        before.battery_charge_wh,
        after.battery_discharge_wh,
        after.battery_charge_wh,
        before.export_wh,
        after.export_wh,
        before.import_wh,
        after.import_wh,
    )
    span = _span(before, after)
    if any(c is None for c in counters) or span is None or span <= 0:
        return DispatchResult(DispatchStatus.UNKNOWN, "no battery counters over the interval")
    dis0, cha0, dis1, cha1, exp0, exp1, imp0, imp1 = (int(c or 0) for c in counters)
    battery = (dis1 - dis0) - (cha1 - cha0)
    commanded = math.floor(command.battery_w * span / 3600)
    slack = tolerance_wh + int(abs(commanded) * tolerance_pct / 100)
    soc = after.soc_pct
    if command.mode is ControlMode.FLOOR:
        ok = battery >= commanded - slack
        limit = reserve_pct is not None and soc is not None and soc <= Decimal(reserve_pct) + 1
        what = f"battery gave {battery} Wh, at least {commanded} Wh commanded"
    else:
        ok = battery <= commanded + slack
        limit = soc is not None and soc >= 99 and command.battery_w < 0
        what = f"battery gave {battery} Wh, at most {commanded} Wh commanded"
    if not ok and limit:
        ok, what = True, what + " (stopped at its limit)"
    return DispatchResult(
        DispatchStatus.FOLLOWED if ok else DispatchStatus.NOT_FOLLOWED,
        what,
        seconds=span,
        commanded_wh=commanded,
        battery_wh=battery,
        export_wh=exp1 - exp0,
        import_wh=imp1 - imp0,
    )


def check_power(
    command: DispatchCommand, reading: Reading, *, tolerance_w: int | None = None
) -> DispatchStatus:
    """A quick check from one reading taken a few seconds after the write: is the battery's power on the
    commanded side? ``tolerance_w`` defaults to 2 % of the command plus 20 W."""
    if reading.battery_w is None:
        return DispatchStatus.UNKNOWN
    tol = tolerance_w if tolerance_w is not None else 20 + abs(command.battery_w) // 50
    if command.mode is ControlMode.FLOOR:
        ok = reading.battery_w >= command.battery_w - tol
    else:
        ok = reading.battery_w <= command.battery_w + tol
    return DispatchStatus.FOLLOWED if ok else DispatchStatus.NOT_FOLLOWED
