"""Simulated ESS sites (PV + household load + battery + grid meter) served over Modbus TCP.

Physics runs in whole simulated seconds with integer powers (W) and integer energies (J), so the balance
load = pv + import - export + discharge - charge holds exactly; the published Wh counters keep it exactly
too (see ``_roll_counters``). Noise (clouds, load jitter) is a hash of (seed, site, time bucket), never an
RNG stream, so a profile value depends only on the time asked for, not on how the simulation was stepped.

Time either follows a ``SimClock`` (simulated = start + speed x elapsed wall time; the device updates when
it is read, like a real meter that refreshes its registers once per second) or is stepped explicitly with
``SiteSimulator.step`` in tests.

Serving is a lean asyncio Modbus TCP responder (``SiteServer``), not pymodbus' server: a benchmark runs
1,000 sites on the same cores as the collector, and pymodbus' server costs several times what the
collector's client does per request (a PDU object, a coroutine handed over with
``run_coroutine_threadsafe``, a register-by-register encoder). Each site keeps its register image as
ready bytes, re-encoded at most once per simulated second, and a read is a slice of it. It answers
function code 3 for device id 1 exactly like the device in ESS.md: exception 01 for other function
codes, 02 outside 40000-40336, 03 for a count outside 1-125, 06 when busy, 0B for another device id.
The collector's side stays pymodbus (``ess_collector.reader``); a test scans this server with pysunspec2.

Like a storage inverter it also takes writes (function codes 16 and 6) to the model 124 controls it
implements (``IMPLEMENTED_CONTROLS``): ``StorCtl_Mod`` with ``InWRte``/``OutWRte`` set a window for the
battery's power that self-consumption works inside (a negative InWRte forces a discharge, which goes to
the grid), ``InOutWRte_RvrtTms`` reverts to self-consumption on its second, ``WChaMax`` and
``MinRsvPct`` are honoured too. A write is all or nothing: 02 if any register is not such a point, 03
for a value the point cannot take, 04 with the ``control_refused`` fault; ``control_ignored`` accepts
and reads back but does not follow. The energy balance holds exactly whatever the battery is told.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from .sunspec import (
    BASE,
    BATTERY_FAULT_STATE,
    INVERTER_FAULT_STATE,
    MAP_LEN,
    MODELS,
    STORCTL_CHARGE,
    STORCTL_DISCHARGE,
    DeviceInfo,
    Reading,
    StorageControls,
    encode,
    encode_controls,
    writable_addresses,
)

FAULTS = (
    "frozen", "slow", "busy", "counter_reset", "spike", "inverter_fault", "battery_fault", "offline",
    "control_refused", "control_ignored",
)  # fmt: skip
MAX_SUBSTEP_S = 60  # catch-up integrates in steps of at most this, so profiles stay smooth
HB_MODULO = 0xFFFF  # heartbeat runs 0..65534: 0xFFFF is the uint16 "not implemented" sentinel
INVERTER_ALARM_OVER_TEMP = 1 << 7  # 103.Evt1 OVER_TEMP
BATTERY_ALARM_CONTACTOR = 1 << 20  # 802.Evt1 CONTACTOR_ERROR
ALARM_CODE_INVERTER, ALARM_CODE_BATTERY = 1, 2  # vendor AlmCode; both faults -> 3
SPIKE_ADDRESS = MODELS[103]["W"].address
RATE_SF = -2  # InOutWRte_SF: charge/discharge rates in 0.01 % of WChaMax
RATE_FULL = 100 * 10**-RATE_SF  # 100 % at RATE_SF
# The model 124 controls this storage inverter implements. The model's other writable points (WChaGra,
# WDisChaGra, VAChaMax, ChaGriSet) stay "not implemented" and writing them is refused like any read-only
# register; InOutWRte_WinTms and _RmpTms accept only 0, because setpoints take effect at once.
IMPLEMENTED_CONTROLS = frozenset(
    ("WChaMax", "StorCtl_Mod", "OutWRte", "InWRte", "InOutWRte_WinTms", "InOutWRte_RvrtTms",
     "InOutWRte_RmpTms", "MinRsvPct")
)  # fmt: skip
_WRITABLE = {a: p for a, p in writable_addresses().items() if p.name in IMPLEMENTED_CONTROLS}
_CONTROL_FIELDS = {"WChaMax": "w_cha_max", "StorCtl_Mod": "mod", "OutWRte": "out_w_rte", "InWRte": "in_w_rte"}
_CONTROL_FIELDS |= {"InOutWRte_WinTms": "win_tms", "InOutWRte_RvrtTms": "rvrt_tms"}
_CONTROL_FIELDS |= {"InOutWRte_RmpTms": "rmp_tms", "MinRsvPct": "min_rsv_pct"}
_TIMED = frozenset(("StorCtl_Mod", "OutWRte", "InWRte", "InOutWRte_RvrtTms"))  # (re)start the reversion timer
_MAP_WORDS = struct.Struct(f">{MAP_LEN}H")
_M64 = (1 << 64) - 1
T = TypeVar("T")


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _hash(*parts: int, h: int = 0) -> int:
    for p in parts:
        h = _splitmix(h ^ (p & _M64))
    return h


def noise(*parts: int, h: int = 0) -> float:
    """Deterministic uniform [0, 1) from integers (stable across runs, unlike hash())."""
    return (_hash(*parts, h=h) >> 11) / float(1 << 53)


@dataclass(frozen=True)
class SiteConfig:
    pv_peak_w: int
    capacity_wh: int  # multiple of 10 (802.WHRtg has scale factor +1)
    max_charge_w: int
    max_discharge_w: int
    reserve_pct: int
    base_load_w: int
    morning_peak_w: int
    evening_peak_w: int
    utc_offset_h: int = 9  # profiles follow local time; sites are in Korea
    clouds: bool = True
    efficiency_pct: int = 95  # per direction, so about 90 % round trip

    @classmethod
    def from_seed(cls, seed: int, site_id: int, *, clouds: bool = True) -> SiteConfig:
        def u(k: int) -> float:
            return noise(seed, site_id, 0xC0F, k)

        capacity = 5000 + 10 * int(u(2) * 1001)
        power = min(5000, capacity // 200 * 100)  # about 0.5 C
        return cls(
            pv_peak_w=3000 + 100 * int(u(1) * 61),
            capacity_wh=capacity,
            max_charge_w=power,
            max_discharge_w=power,
            reserve_pct=(10, 15, 20)[int(u(3) * 3)],
            base_load_w=150 + int(u(4) * 250),
            morning_peak_w=800 + int(u(5) * 1200),
            evening_peak_w=1200 + int(u(6) * 1800),
            clouds=clouds,
        )


@dataclass
class Faults:
    frozen: bool = False
    slow_s: float = 0.0  # every response is delayed this long
    busy: bool = False
    spike_polls: int = 0  # this many reads of 103.W return an impossible PV power
    inverter_fault: bool = False
    battery_fault: bool = False
    offline: bool = False
    control_refused: bool = False  # every write is answered with exception 04 (server device failure)
    control_ignored: bool = False  # writes are accepted and read back, but the battery ignores them


class SiteSimulator:
    """One site's physics and its published register image. Thread-safe (servers and tests share it)."""

    def __init__(
        self,
        site_id: int,
        seed: int = 0,
        *,
        start: datetime | None = None,
        config: SiteConfig | None = None,
    ) -> None:
        self.site_id, self.seed = site_id, seed
        self._h = _hash(seed, site_id)  # per-site prefix of every noise() key
        self._noise_cache: dict[tuple[int, int], float] = {}
        self.config = cfg = config or SiteConfig.from_seed(seed, site_id)
        self._t = int((start or datetime.now(UTC)).timestamp())
        self._cap_j = cfg.capacity_wh * 3600
        self._reserve_j = self._cap_j * cfg.reserve_pct // 100
        soc = cfg.reserve_pct + 10 + int(self._u(7) * (80 - cfg.reserve_pct))
        self._stored_j = self._cap_j * soc // 100
        # A site that has been running for a while: lifetime counters start well above zero.
        days = 100 + int(self._u(9) * 900)
        pv = days * cfg.pv_peak_w * 35 // 10
        cha = days * cfg.capacity_wh * 6 // 10
        start_wh = {"pv": pv, "imp": days * cfg.base_load_w * 20, "exp": pv * 3 // 10}
        start_wh |= {"cha": cha, "dis": cha * 9 // 10}
        self._joules = {k: v * 3600 for k, v in start_wh.items()}
        self._wh = dict(start_wh)
        self._wh["load"] = pv + start_wh["imp"] + start_wh["dis"] - start_wh["exp"] - cha
        self.heartbeat = int(self._u(10) * 1000)
        self.faults = Faults()
        self.info = DeviceInfo(
            serial=f"SIM{seed:04d}-{site_id:06d}",
            max_charge_w=cfg.max_charge_w,
            max_discharge_w=cfg.max_discharge_w,
            reserve_pct=cfg.reserve_pct,
        )
        self._lock = threading.RLock()
        self._listeners: list[Callable[[str], None]] = []
        self.controls = self.default_controls()
        self._revert_at: int | None = None  # epoch second at which the rate controls revert
        self.pv_w = self.load_w = self.battery_w = self.grid_w = 0
        self._decide()
        self._reading = self.current()
        self._image = self._encode(self._reading)

    @property
    def _image(self) -> list[int]:
        """The published register image 40000..40336 (``_image_bytes`` holds the same, ready to serve)."""
        return self._image_regs

    @_image.setter
    def _image(self, regs: list[int]) -> None:
        self._image_regs, self._image_bytes = regs, _MAP_WORDS.pack(*regs)

    def _u(self, k: int) -> float:
        return noise(0x5173, k, h=self._h)

    # ---- profiles: pure functions of time --------------------------------------------------------------
    def profile(self, t: int) -> tuple[int, int]:
        """(clear or cloudy PV W, household load W) at epoch second t."""
        cfg = self.config
        local = t + cfg.utc_offset_h * 3600
        day, hour = divmod(local, 86400)
        h = hour / 3600
        season = math.sin(2 * math.pi * ((day % 365.2425) - 80) / 365.2425)  # +1 at June solstice
        daylen = 12 + 2.4 * season
        x = (h - 12 + daylen / 2) / daylen
        pv = 0.0
        if 0 < x < 1:
            pv = cfg.pv_peak_w * math.sin(math.pi * x) ** 1.5 * (0.8 + 0.2 * season)
            if cfg.clouds:
                cloudiness = 0.9 * self._noise(1, day) ** 2
                b, frac = divmod(local, 600)  # cloud cover drifts over 10-minute buckets
                n0, n1 = self._noise(2, b), self._noise(2, b + 1)
                pv *= 1 - cloudiness * (n0 + (n1 - n0) * frac / 600)
        load = cfg.base_load_w + cfg.morning_peak_w * math.exp(-0.5 * ((h - 7.5) / 1.0) ** 2)
        load += cfg.evening_peak_w * math.exp(-0.5 * ((h - 19.5) / 1.6) ** 2)
        load *= 0.85 + 0.3 * self._noise(3, local // 300)
        return int(pv), max(50, int(load))

    def _noise(self, kind: int, bucket: int) -> float:
        """noise(kind, bucket) of this site, remembered: a bucket spans minutes to a day of updates."""
        key = (kind, bucket)
        if (value := self._noise_cache.get(key)) is None:
            if len(self._noise_cache) > 64:
                self._noise_cache.clear()
            value = self._noise_cache[key] = noise(kind, bucket, h=self._h)
        return value

    # ---- physics -------------------------------------------------------------------------------------
    def _decide(self) -> None:
        """The battery's power at the current second: self-consumption (absorb surplus, cover deficit)
        inside the window the model 124 controls set, then inside the battery's power and energy limits."""
        cfg, f, c = self.config, self.faults, self.controls
        pv, load = self.profile(self._t)
        if f.inverter_fault:
            pv = 0
        eff = cfg.efficiency_pct
        # Taper near full/reserve so one MAX_SUBSTEP_S step can never over- or under-run the battery.
        room_w = max(0, (self._cap_j - self._stored_j) * 100 // eff // MAX_SUBSTEP_S)
        avail_w = max(0, (self._stored_j - self._reserve_j) * eff // 100 // MAX_SUBSTEP_S)
        bat = 0
        if not f.battery_fault:
            want = load - pv  # + = discharge to cover a deficit, - = charge from a surplus
            if c.mod and not f.control_ignored:
                ref = c.w_cha_max or 0
                if c.mod & STORCTL_CHARGE:  # charging at most InWRte; a negative InWRte forces discharge
                    want = max(want, -((c.in_w_rte or 0) * ref // RATE_FULL))
                if c.mod & STORCTL_DISCHARGE:  # discharging at most OutWRte; negative forces charge
                    want = min(want, (c.out_w_rte or 0) * ref // RATE_FULL)
            charge_cap = min(cfg.max_charge_w, c.w_cha_max or 0, room_w)
            bat = min(max(want, -charge_cap), cfg.max_discharge_w, avail_w)
        self.pv_w, self.load_w, self.battery_w = pv, load, bat
        self.grid_w = load - pv - bat

    def _integrate(self, dt: int) -> None:
        eff, j = self.config.efficiency_pct, self._joules
        cha = dis = 0
        if self.battery_w < 0:
            cha = min(-self.battery_w * dt, (self._cap_j - self._stored_j) * 100 // eff)
            self._stored_j += cha * eff // 100
        elif self.battery_w > 0:
            dis = min(self.battery_w * dt, (self._stored_j - self._reserve_j) * eff // 100)
            self._stored_j -= -(-dis * 100 // eff)  # ceil: never report more than was drawn
        grid = (self.load_w - self.pv_w) * dt + cha - dis  # the grid takes whatever the battery did not
        j["pv"] += self.pv_w * dt
        j["cha"], j["dis"] = j["cha"] + cha, j["dis"] + dis
        j["imp"], j["exp"] = j["imp"] + max(grid, 0), j["exp"] + max(-grid, 0)

    def _roll_counters(self) -> None:
        """Publish integer Wh counters that are monotonic AND satisfy the balance identity exactly.

        Sources (pv, import, discharge) are floor(J / 3600). Load is derived from the identity; a sink
        (export, charge) crossing a Wh boundary before its sources would make load step back by 1 Wh, so
        sinks advance only as far as keeps load monotonic and catch up on the next update.
        """
        w, j = self._wh, self._joules
        for k in ("pv", "imp", "dis"):
            w[k] = j[k] // 3600
        room = w["pv"] + w["imp"] + w["dis"] - w["exp"] - w["cha"] - w["load"]
        for k in ("exp", "cha"):
            step = min(j[k] // 3600 - w[k], room)
            w[k] += max(step, 0)
            room -= max(step, 0)
        w["load"] = w["pv"] + w["imp"] + w["dis"] - w["exp"] - w["cha"]

    def current(self) -> Reading:
        """What the device measures now (the published image lags behind only while frozen)."""
        f, w = self.faults, self._wh
        return Reading(
            pv_w=self.pv_w,
            load_w=self.load_w,
            grid_w=self.grid_w,
            battery_w=self.battery_w,
            soc_pct=Decimal(self._stored_j * 1000 // self._cap_j).scaleb(-1),
            capacity_wh=self.config.capacity_wh,
            pv_wh=w["pv"],
            load_wh=w["load"],
            import_wh=w["imp"],
            export_wh=w["exp"],
            battery_charge_wh=w["cha"],
            battery_discharge_wh=w["dis"],
            inverter_state=INVERTER_FAULT_STATE if f.inverter_fault else (4 if self.pv_w > 0 else 2),
            inverter_alarms=INVERTER_ALARM_OVER_TEMP if f.inverter_fault else 0,
            battery_state=BATTERY_FAULT_STATE if f.battery_fault else 3,
            battery_alarms=BATTERY_ALARM_CONTACTOR if f.battery_fault else 0,
            charge_state=4 if self.battery_w < 0 else 3 if self.battery_w > 0 else 6,
            meter_events=0,
            alarm_code=(ALARM_CODE_INVERTER if f.inverter_fault else 0)
            | (ALARM_CODE_BATTERY if f.battery_fault else 0),
            heartbeat=self.heartbeat,
            device_time=datetime.fromtimestamp(self._t, UTC),
        )

    def _encode(self, reading: Reading) -> list[int]:
        image = encode(reading, self.info)
        encode_controls(image, self.controls)
        return image

    def _publish(self) -> None:
        if not self.faults.frozen:
            self._reading = self.current()
            self._image = self._encode(self._reading)

    # ---- model 124 storage controls ------------------------------------------------------------------
    def default_controls(self) -> StorageControls:
        """Self-consumption: no limits set, rates at 100 %, no reversion timer."""
        cfg = self.config
        return StorageControls(
            w_cha_max=cfg.max_charge_w, w_cha_max_sf=0, mod=0, out_w_rte=RATE_FULL, in_w_rte=RATE_FULL,
            rate_sf=RATE_SF, win_tms=0, rvrt_tms=0, rmp_tms=0, min_rsv_pct=cfg.reserve_pct, min_rsv_pct_sf=0,
        )  # fmt: skip

    def write(self, address: int, values: Sequence[int]) -> int | None:
        """Apply one write (function code 6 or 16) at the current second: None, or the Modbus exception code.

        All or nothing: every register must be an implemented writable model 124 point (else 02) and
        every value valid for it (else 03). Writing the mode, a rate or the timeout restarts the
        reversion timer: ``InOutWRte_RvrtTms`` seconds later the mode and rates revert (0 = never).
        """
        with self._lock:
            if self.faults.control_refused:
                return SERVER_DEVICE_FAILURE
            changes: dict[str, int] = {}
            for k, raw in enumerate(values):
                point = _WRITABLE.get(address + k)
                if point is None:
                    return ILLEGAL_ADDRESS
                changes[point.name] = raw - 0x10000 if point.type == "int16" and raw & 0x8000 else raw
            if not all(self._valid(name, value) for name, value in changes.items()):
                return ILLEGAL_VALUE
            c = self.controls = replace(self.controls, **{_CONTROL_FIELDS[n]: v for n, v in changes.items()})
            if "MinRsvPct" in changes:
                self._reserve_j = self._cap_j * changes["MinRsvPct"] // 100
            if _TIMED & changes.keys():
                self._revert_at = self._t + c.rvrt_tms if c.mod and c.rvrt_tms else None
            self._decide()
            self._publish()
            return None

    def _valid(self, name: str, value: int) -> bool:
        if name == "WChaMax":
            return 0 <= value <= self.config.max_charge_w
        if name == "StorCtl_Mod":
            return value & ~(STORCTL_CHARGE | STORCTL_DISCHARGE) == 0
        if name in ("OutWRte", "InWRte"):
            return -RATE_FULL <= value <= RATE_FULL
        if name == "InOutWRte_RvrtTms":
            return value != 0xFFFF  # the uint16 "not implemented" value
        if name == "MinRsvPct":
            return 0 <= value <= 100
        return value == 0  # InOutWRte_WinTms, InOutWRte_RmpTms: setpoints apply at once

    def _revert(self) -> None:
        """The reversion timeout expired: back to self-consumption."""
        self.controls = replace(self.controls, mod=0, out_w_rte=RATE_FULL, in_w_rte=RATE_FULL)
        self._revert_at = None

    # ---- public API ----------------------------------------------------------------------------------
    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self._t, UTC)

    @property
    def reading(self) -> Reading:
        """The values the device currently serves over Modbus."""
        return self._reading

    @property
    def stored_wh(self) -> int:
        return self._stored_j // 3600

    def advance_to(self, when: datetime) -> bool:
        """Integrate up to ``when`` (whole seconds); one device update: heartbeat +1. False if no time passed."""
        return self.advance_to_second(math.floor(when.timestamp()))

    def advance_to_second(self, target: int) -> bool:
        """``advance_to`` an epoch second; cheap when that second was reached already (every read calls it)."""
        if target <= self._t:
            return False
        with self._lock:
            if target <= self._t:
                return False
            while self._t < target:
                dt = min(MAX_SUBSTEP_S, target - self._t)
                if self._revert_at is not None:  # the reversion happens on its very second
                    dt = min(dt, self._revert_at - self._t)
                self._integrate(dt)
                self._t += dt
                if self._revert_at is not None and self._t >= self._revert_at:
                    self._revert()
                self._decide()
            self._roll_counters()
            if not self.faults.frozen:  # a hung controller stops its heartbeat too
                self.heartbeat = (self.heartbeat + 1) % HB_MODULO
            self._publish()
            return True

    def step(self, seconds: float = 1.0) -> bool:
        return self.advance_to(self.time + timedelta(seconds=seconds))

    def serve(self, address: int, count: int) -> list[int]:
        """Registers for one read request (applies a pending spike once per read that covers 103.W)."""
        return list(struct.unpack(f">{count}H", self.serve_bytes(address, count)))

    def serve_bytes(self, address: int, count: int) -> bytes:
        """``serve`` as big-endian bytes, the payload of the Modbus response."""
        i = 2 * (address - BASE)
        if self.faults.spike_polls <= 0 or not address <= SPIKE_ADDRESS < address + count:
            return self._image_bytes[i : i + 2 * count]  # one bytes object: no lock needed to slice it
        with self._lock:
            if self.faults.spike_polls <= 0:
                return self._image_bytes[i : i + 2 * count]
            self.faults.spike_polls -= 1
            image = self._encode(replace(self._reading, pv_w=self.spike_w))
            return _MAP_WORDS.pack(*image)[i : i + 2 * count]

    @property
    def spike_w(self) -> int:
        return min(10 * self.config.pv_peak_w, 0x7FFF)  # int16 with W_SF = 0

    def set_fault(self, name: str, enabled: bool = True, *, delay_s: float = 5.0, polls: int = 3) -> None:
        """Switch a fault on/off at run time; ``counter_reset`` acts once when enabled."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            f = self.faults
            if name == "slow":
                f.slow_s = delay_s if enabled else 0.0
            elif name == "spike":
                f.spike_polls = polls if enabled else 0
            elif name == "counter_reset":
                if enabled:  # like a replaced meter/controller: every counter restarts near zero (0 = N/A)
                    self._joules = dict.fromkeys(self._joules, 3600)
                    self._wh = dict.fromkeys(self._wh, 1)
            else:
                setattr(f, name, enabled)
            self._decide()
            self._publish()
        for listener in list(self._listeners):
            listener(name)

    def clear_faults(self) -> None:
        for name in FAULTS:
            if name != "counter_reset":
                self.set_fault(name, False)

    def fault_state(self) -> dict[str, Any]:
        return asdict(self.faults)

    def add_listener(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[str], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)


class SimClock:
    """Simulated time = start + speed x elapsed wall time.

    With ``anchor`` (Unix wall time at which simulated time was ``start``) the clock agrees with the
    service's energy clock (common/clock.py) in other processes; without, it starts now.
    """

    def __init__(
        self, start: datetime | None = None, speed: float = 1.0, *, anchor: float | None = None
    ) -> None:
        self.start = (start or datetime.now(UTC)).astimezone(UTC)
        self.speed = speed
        self._anchor = anchor
        self._start_s = self.start.timestamp()
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.seconds(), UTC)

    def seconds(self) -> float:
        """Simulated time now as epoch seconds (what a server asks on every read: no datetime built)."""
        if self._anchor is not None:
            return self._start_s + self.speed * (time.time() - self._anchor)
        return self._start_s + self.speed * (time.monotonic() - self._t0)


_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length (unit id + PDU), unit id
_READ = struct.Struct(">BHH")  # function code, start address, count
_ANSWER = struct.Struct(">HHHBBB")  # MBAP + function code + byte count
_EXCEPTION = struct.Struct(">HHHBBB")  # MBAP + function code | 0x80 + exception code
_WRITE = struct.Struct(">BHHB")  # function code 16, start address, count, byte count
_WRITTEN = struct.Struct(">HHHBBHH")  # MBAP + function code 6 or 16 + address + count (or value)
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, SERVER_DEVICE_FAILURE = 1, 2, 3, 4
DEVICE_BUSY, GATEWAY_NO_RESPONSE = 6, 0x0B
DEVICE_ID = 1
MAX_WRITE = 123  # registers in one function code 16 request


class SiteServer:
    """Serves one SiteSimulator on one TCP port (device id 1, holding registers 40000..40336)."""

    def __init__(
        self, sim: SiteSimulator, *, host: str = "127.0.0.1", port: int = 0, clock: SimClock | None = None
    ) -> None:
        self.sim, self.host, self.port, self.clock = sim, host, port, clock
        self._server: asyncio.Server | None = None
        self._running = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections: set[_ModbusConnection] = set()

    async def start(self) -> None:
        self._loop, self._running = asyncio.get_running_loop(), True
        await self._listen()  # even when offline: binding once fixes the port number for later
        self.sim.add_listener(self._on_fault)
        await self.reconcile()

    async def stop(self) -> None:
        self._running = False
        self.sim.remove_listener(self._on_fault)
        async with self._lock:
            await self._close()

    async def reconcile(self) -> None:
        """Bring the listener in line with the offline switch."""
        async with self._lock:
            if self.sim.faults.offline and self._server:
                await self._close()
            elif not self.sim.faults.offline and not self._server and self._running:
                await self._listen()

    def _on_fault(self, name: str) -> None:
        if name == "offline" and self._loop and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._spawn_reconcile)

    def _spawn_reconcile(self) -> None:
        task = asyncio.ensure_future(self.reconcile())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(lambda: _ModbusConnection(self), self.host, self.port)
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve site {self.sim.site_id} on {self.host}:{self.port}: {exc}"
            ) from exc
        if self.port == 0:
            self.port = server.sockets[0].getsockname()[1]
        self._server = server

    async def _close(self) -> None:
        """Stop listening and drop every open connection (a device that went off the network)."""
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.close()
            await self._server.wait_closed()
            self._server = None

    def answer(self, tid: int, unit: int, pdu: bytes) -> bytes | None:
        """The response frame to one request frame's PDU, or None when it must wait (``slow``)."""
        function = pdu[0]
        if unit != DEVICE_ID:
            return _exception(tid, unit, function, GATEWAY_NO_RESPONSE)
        if function == 3:
            if len(pdu) != 5 or not 1 <= (count := _READ.unpack(pdu)[2]) <= 125:
                return _exception(tid, unit, 3, ILLEGAL_VALUE)
        elif function == 6:
            if len(pdu) != 5:
                return _exception(tid, unit, 6, ILLEGAL_VALUE)
            count = 1
        elif function == 16:
            if len(pdu) < _WRITE.size:
                return _exception(tid, unit, 16, ILLEGAL_VALUE)
            _, _, count, nbytes = _WRITE.unpack_from(pdu)
            if not 1 <= count <= MAX_WRITE or nbytes != 2 * count or len(pdu) != _WRITE.size + nbytes:
                return _exception(tid, unit, 16, ILLEGAL_VALUE)
        else:
            return _exception(tid, unit, function, ILLEGAL_FUNCTION)
        address = _READ.unpack_from(pdu)[1]
        if address < BASE or address + count > BASE + MAP_LEN:
            return _exception(tid, unit, function, ILLEGAL_ADDRESS)
        faults = self.sim.faults
        if faults.busy:
            return _exception(tid, unit, function, DEVICE_BUSY)
        if faults.slow_s > 0:
            return None
        return self.respond(tid, unit, pdu)

    def respond(self, tid: int, unit: int, pdu: bytes) -> bytes:
        """Carry out a request ``answer`` has checked: a read, or a write to model 124."""
        function, address, count = _READ.unpack_from(pdu)
        if function == 3:
            return self.registers(tid, unit, address, count)
        if self.clock is not None:  # the write takes effect at the device's current second
            self.sim.advance_to_second(math.floor(self.clock.seconds()))
        # function 6 carries one value where 16 carries the count: (address, value) vs (address, count, ...)
        values = (count,) if function == 6 else struct.unpack_from(f">{count}H", pdu, _WRITE.size)
        if (code := self.sim.write(address, values)) is not None:
            return _exception(tid, unit, function, code)
        # both answers echo the request's first four bytes after the function code
        return _WRITTEN.pack(tid, 0, 6, unit, function, address, count)

    def registers(self, tid: int, unit: int, address: int, count: int) -> bytes:
        if self.clock is not None:
            self.sim.advance_to_second(math.floor(self.clock.seconds()))
        data = self.sim.serve_bytes(address, count)
        return _ANSWER.pack(tid, 0, 3 + len(data), unit, 3, len(data)) + data


def _exception(tid: int, unit: int, function_code: int, code: int) -> bytes:
    return _EXCEPTION.pack(tid, 0, 3, unit, (function_code | 0x80) & 0xFF, code)


class _ModbusConnection(asyncio.Protocol):
    """One client connection: Modbus TCP frames in, answers out."""

    def __init__(self, server: SiteServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None  # a delayed answer still pending is dropped

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self._buffer + data if self._buffer else data
        at = 0
        while len(buf) - at >= 8:
            tid, protocol, length, unit = _MBAP.unpack_from(buf, at)
            if protocol != 0 or not 2 <= length <= 254:  # not Modbus TCP: hang up, as a device would
                self._buffer = b""
                self.close()
                return
            if len(buf) - at < 6 + length:
                break
            pdu = buf[at + 7 : at + 6 + length]
            at += 6 + length
            answer = self.server.answer(tid, unit, pdu)
            if answer is None:  # a slow device: the registers are read when the answer leaves
                delay = self.server.sim.faults.slow_s
                asyncio.get_running_loop().call_later(delay, self._answer_late, tid, unit, pdu)
            elif self.transport is not None:
                self.transport.write(answer)
        self._buffer = buf[at:]

    def _answer_late(self, tid: int, unit: int, pdu: bytes) -> None:
        if self.transport is not None:
            self.transport.write(self.server.respond(tid, unit, pdu))


class SimulatorCluster:
    """N sites in one asyncio loop: on ``ports`` (one each), on consecutive ports from ``base_port``, or
    on free ports the system picks (port 0; ``ports`` tells which once started).

    ``speed`` > 0 runs a shared SimClock; ``speed=0`` freezes time so tests step each SiteSimulator.
    """

    def __init__(
        self,
        n_sites: int,
        *,
        seed: int = 0,
        start: datetime | None = None,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        base_port: int | None = None,
        ports: Sequence[int] | None = None,
        clouds: bool = True,
        anchor: float | None = None,
        configs: list[SiteConfig] | None = None,
    ) -> None:
        start = (start or datetime.now(UTC)).astimezone(UTC)
        self.clock = SimClock(start, speed, anchor=anchor) if speed > 0 else None
        self.host = host
        configs = configs or [SiteConfig.from_seed(seed, i, clouds=clouds) for i in range(n_sites)]
        self.sims = [SiteSimulator(i, seed, start=start, config=configs[i]) for i in range(n_sites)]
        if ports is not None and len(ports) != n_sites:
            raise ValueError(f"{n_sites} sites need {n_sites} ports, got {len(ports)}")
        self.servers = [
            SiteServer(
                sim,
                host=host,
                port=ports[i] if ports is not None else base_port + i if base_port else 0,
                clock=self.clock,
            )
            for i, sim in enumerate(self.sims)
        ]

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    async def start(self) -> None:
        await asyncio.gather(*(s.start() for s in self.servers))

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers))

    async def set_fault(self, index: int, name: str, enabled: bool = True, **params: Any) -> None:
        """Set a fault and wait until it is in effect (for ``offline``: the port is closed/reopened)."""
        self.sims[index].set_fault(name, enabled, **params)
        await self.servers[index].reconcile()


class ThreadedCluster:
    """A SimulatorCluster running in a background thread with its own loop, for sync code (pytest, CLI).

    with ThreadedCluster(SimulatorCluster(10, speed=60)) as c: ... c.ports, c.sims, c.set_fault(0, "busy")
    """

    def __init__(self, cluster: SimulatorCluster) -> None:
        self.cluster = cluster
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ess-simulator", daemon=True)

    @property
    def ports(self) -> list[int]:
        return self.cluster.ports

    @property
    def sims(self) -> list[SiteSimulator]:
        return self.cluster.sims

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ThreadedCluster:
        self._thread.start()
        try:
            self.call(self.cluster.start())
        except BaseException:  # e.g. a base_port already in use: do not leave the thread running
            self.stop()
            raise
        return self

    def set_fault(self, index: int, name: str, enabled: bool = True, **params: Any) -> None:
        self.call(self.cluster.set_fault(index, name, enabled, **params))

    def stop(self) -> None:
        if not self._thread.is_alive():
            if not self._loop.is_closed():
                self._loop.close()
            return
        self.call(self.cluster.stop())
        self.call(_cancel_other_tasks())  # e.g. a "slow" response still sleeping
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ThreadedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _cancel_other_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    """python -m ess_collector.simulator --sites 10 --base-port 15020 --speed 60"""
    ap = argparse.ArgumentParser(description="Serve simulated ESS sites over Modbus TCP")
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--base-port", type=int, default=15020)
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    ap.add_argument("--start", type=datetime.fromisoformat, help="simulated time at --anchor (ISO 8601, UTC)")
    ap.add_argument("--anchor", type=float, help="Unix wall time at which simulated time was --start")
    args = ap.parse_args(argv)
    cluster = SimulatorCluster(
        args.sites,
        seed=args.seed,
        speed=args.speed,
        host=args.host,
        base_port=args.base_port,
        start=args.start,
        anchor=args.anchor,
    )
    with ThreadedCluster(cluster) as running:
        print(f"{args.sites} sites on {args.host}:{running.ports[0]}..{running.ports[-1]}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
