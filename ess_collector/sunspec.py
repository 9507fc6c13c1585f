"""The SunSpec register map of an ESS site (docs: /work/shared/ESS.md) and its encoder/decoder.

Point offsets and types come from the official SunSpec model definitions shipped as JSON inside the
``pysunspec2`` package, so the map cannot drift from the standard. ``pysunspec2`` is only a development
dependency, so when it is missing a verbatim copy of the point lists (``_FALLBACK``) is used instead; a test
proves the copy equals the official JSON. Vendor model 64900 is ours and is defined here in the same JSON
format (``VENDOR_MODEL_DEF``), so pysunspec2 can decode it too when pointed at it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

BASE = 40000
MAP_LEN = 337  # 40000..40336 inclusive
MAX_READ = 125  # Modbus limit for one FC3 request
SUNS = (0x5375, 0x6E53)  # "SunS"
END_MODEL = 0xFFFF
VENDOR_MODEL_ID = 64900
MODEL_IDS = (1, 103, 203, 124, 802, VENDOR_MODEL_ID)

# type -> (registers, "not implemented" raw value)
_TYPES: dict[str, tuple[int, int]] = {
    "int16": (1, 0x8000),
    "uint16": (1, 0xFFFF),
    "enum16": (1, 0xFFFF),
    "bitfield16": (1, 0xFFFF),
    "sunssf": (1, 0x8000),
    "pad": (1, 0x8000),
    "acc32": (2, 0),
    "uint32": (2, 0xFFFFFFFF),
    "bitfield32": (2, 0xFFFFFFFF),
    "string": (0, 0),  # size from the definition; all-zero registers = not implemented
}

VENDOR_MODEL_DEF: dict[str, Any] = {
    "id": VENDOR_MODEL_ID,
    "group": {
        "name": "essx_site",
        "label": "ESSX site totals",
        "desc": "Load power/energy, battery energy counters, alarm code, heartbeat and device clock",
        "type": "group",
        "points": [
            {"name": "ID", "value": VENDOR_MODEL_ID, "type": "uint16", "size": 1, "mandatory": "M"},
            {"name": "L", "type": "uint16", "size": 1, "mandatory": "M"},
            {"name": "LoadW", "type": "int16", "size": 1, "sf": "W_SF", "units": "W"},
            {"name": "W_SF", "type": "sunssf", "size": 1},
            {"name": "LoadWh", "type": "acc32", "size": 2, "sf": "Wh_SF", "units": "Wh"},
            {"name": "BatChaWh", "type": "acc32", "size": 2, "sf": "Wh_SF", "units": "Wh"},
            {"name": "BatDisChaWh", "type": "acc32", "size": 2, "sf": "Wh_SF", "units": "Wh"},
            {"name": "Wh_SF", "type": "sunssf", "size": 1},
            {"name": "AlmCode", "type": "uint16", "size": 1},
            {"name": "Hb", "type": "uint16", "size": 1},
            {"name": "Tms", "type": "uint32", "size": 2, "units": "Secs"},
            {"name": "Pad", "type": "pad", "size": 1},
        ],
    },
}

_ABBR = {"u16": "uint16", "i16": "int16", "e16": "enum16", "b16": "bitfield16", "b32": "bitfield32"}
_ABBR |= {"a32": "acc32", "u32": "uint32", "sf": "sunssf", "pad": "pad"}
# Copy of the official point lists (after ID and L), used only when pysunspec2 is not installed.
_FALLBACK: dict[int, str] = {
    1: "Mn:str16 Md:str16 Opt:str8 Vr:str8 SN:str16 DA:u16 Pad:pad",
    103: "A:u16 AphA:u16 AphB:u16 AphC:u16 A_SF:sf PPVphAB:u16 PPVphBC:u16 PPVphCA:u16 PhVphA:u16 "
    "PhVphB:u16 PhVphC:u16 V_SF:sf W:i16 W_SF:sf Hz:u16 Hz_SF:sf VA:i16 VA_SF:sf VAr:i16 VAr_SF:sf "
    "PF:i16 PF_SF:sf WH:a32 WH_SF:sf DCA:u16 DCA_SF:sf DCV:u16 DCV_SF:sf DCW:i16 DCW_SF:sf TmpCab:i16 "
    "TmpSnk:i16 TmpTrns:i16 TmpOt:i16 Tmp_SF:sf St:e16 StVnd:e16 Evt1:b32 Evt2:b32 EvtVnd1:b32 "
    "EvtVnd2:b32 EvtVnd3:b32 EvtVnd4:b32",
    203: "A:i16 AphA:i16 AphB:i16 AphC:i16 A_SF:sf PhV:i16 PhVphA:i16 PhVphB:i16 PhVphC:i16 PPV:i16 "
    "PhVphAB:i16 PhVphBC:i16 PhVphCA:i16 V_SF:sf Hz:i16 Hz_SF:sf W:i16 WphA:i16 WphB:i16 WphC:i16 "
    "W_SF:sf VA:i16 VAphA:i16 VAphB:i16 VAphC:i16 VA_SF:sf VAR:i16 VARphA:i16 VARphB:i16 VARphC:i16 "
    "VAR_SF:sf PF:i16 PFphA:i16 PFphB:i16 PFphC:i16 PF_SF:sf TotWhExp:a32 TotWhExpPhA:a32 "
    "TotWhExpPhB:a32 TotWhExpPhC:a32 TotWhImp:a32 TotWhImpPhA:a32 TotWhImpPhB:a32 TotWhImpPhC:a32 "
    "TotWh_SF:sf TotVAhExp:a32 TotVAhExpPhA:a32 TotVAhExpPhB:a32 TotVAhExpPhC:a32 TotVAhImp:a32 "
    "TotVAhImpPhA:a32 TotVAhImpPhB:a32 TotVAhImpPhC:a32 TotVAh_SF:sf TotVArhImpQ1:a32 "
    "TotVArhImpQ1PhA:a32 TotVArhImpQ1PhB:a32 TotVArhImpQ1PhC:a32 TotVArhImpQ2:a32 TotVArhImpQ2PhA:a32 "
    "TotVArhImpQ2PhB:a32 TotVArhImpQ2PhC:a32 TotVArhExpQ3:a32 TotVArhExpQ3PhA:a32 TotVArhExpQ3PhB:a32 "
    "TotVArhExpQ3PhC:a32 TotVArhExpQ4:a32 TotVArhExpQ4PhA:a32 TotVArhExpQ4PhB:a32 TotVArhExpQ4PhC:a32 "
    "TotVArh_SF:sf Evt:b32",
    124: "WChaMax:u16 WChaGra:u16 WDisChaGra:u16 StorCtl_Mod:b16 VAChaMax:u16 MinRsvPct:u16 ChaState:u16 "
    "StorAval:u16 InBatV:u16 ChaSt:e16 OutWRte:i16 InWRte:i16 InOutWRte_WinTms:u16 "
    "InOutWRte_RvrtTms:u16 InOutWRte_RmpTms:u16 ChaGriSet:e16 WChaMax_SF:sf WChaDisChaGra_SF:sf "
    "VAChaMax_SF:sf MinRsvPct_SF:sf ChaState_SF:sf StorAval_SF:sf InBatV_SF:sf InOutWRte_SF:sf",
    802: "AHRtg:u16 WHRtg:u16 WChaRteMax:u16 WDisChaRteMax:u16 DisChaRte:u16 SoCMax:u16 SoCMin:u16 "
    "SocRsvMax:u16 SoCRsvMin:u16 SoC:u16 DoD:u16 SoH:u16 NCyc:u32 ChaSt:e16 LocRemCtl:e16 Hb:u16 "
    "CtrlHb:u16 AlmRst:u16 Typ:e16 State:e16 StateVnd:e16 WarrDt:u32 Evt1:b32 Evt2:b32 EvtVnd1:b32 "
    "EvtVnd2:b32 V:u16 VMax:u16 VMin:u16 CellVMax:u16 CellVMaxStr:u16 CellVMaxMod:u16 CellVMin:u16 "
    "CellVMinStr:u16 CellVMinMod:u16 CellVAvg:u16 A:i16 AChaMax:u16 ADisChaMax:u16 W:i16 "
    "ReqInvState:e16 ReqW:i16 SetOp:e16 SetInvState:e16 AHRtg_SF:sf WHRtg_SF:sf WChaDisChaMax_SF:sf "
    "DisChaRte_SF:sf SoC_SF:sf DoD_SF:sf SoH_SF:sf V_SF:sf CellV_SF:sf A_SF:sf AMax_SF:sf W_SF:sf",
}


class MapError(ValueError):
    """The registers are not the ESS SunSpec map (marker, model ids or lengths differ)."""


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    type: str
    size: int  # registers
    address: int  # absolute PDU address


@dataclass(frozen=True, slots=True)
class Model:
    id: int
    address: int  # address of the ID register
    length: int  # the L register: registers after ID and L
    points: dict[str, Point]

    def __getitem__(self, name: str) -> Point:
        return self.points[name]


def official_point_list(model_id: int) -> list[tuple[str, str, int]]:
    """(name, type, size) of every top-level point of a model, from pysunspec2's JSON if installed."""
    if model_id == VENDOR_MODEL_ID:
        return [(p["name"], p["type"], p["size"]) for p in VENDOR_MODEL_DEF["group"]["points"]]
    try:
        text = resources.files("sunspec2").joinpath(f"models/json/model_{model_id}.json").read_text()
    except ModuleNotFoundError:
        return fallback_point_list(model_id)
    group = json.loads(text)["group"]
    if group.get("groups"):  # none of our models repeat; a repeating group would need a count point
        raise MapError(f"model {model_id} has sub-groups, not supported")
    return [(p["name"], p["type"], p["size"]) for p in group["points"]]


# Copy of the official writable ("access": "RW") points, used only when pysunspec2 is not installed.
_FALLBACK_WRITABLE: dict[int, str] = {
    1: "DA",
    103: "",
    203: "",
    124: "WChaMax WChaGra WDisChaGra StorCtl_Mod VAChaMax MinRsvPct OutWRte InWRte InOutWRte_WinTms "
    "InOutWRte_RvrtTms InOutWRte_RmpTms ChaGriSet",
    802: "SocRsvMax SoCRsvMin CtrlHb AlmRst SetOp SetInvState",
}


def official_writable_points(model_id: int) -> frozenset[str]:
    """Names of a model's points the standard marks writable (``"access": "RW"``), from pysunspec2's JSON."""
    if model_id == VENDOR_MODEL_ID:
        return frozenset()
    try:
        text = resources.files("sunspec2").joinpath(f"models/json/model_{model_id}.json").read_text()
    except ModuleNotFoundError:
        return frozenset(_FALLBACK_WRITABLE[model_id].split())
    return frozenset(p["name"] for p in json.loads(text)["group"]["points"] if p.get("access") == "RW")


def fallback_point_list(model_id: int) -> list[tuple[str, str, int]]:
    out = [("ID", "uint16", 1), ("L", "uint16", 1)]
    for token in _FALLBACK[model_id].split():
        name, abbr = token.split(":")
        if abbr.startswith("str"):
            out.append((name, "string", int(abbr[3:])))
        else:
            out.append((name, _ABBR[abbr], _TYPES[_ABBR[abbr]][0]))
    return out


def _build_models() -> dict[int, Model]:
    models: dict[int, Model] = {}
    address = BASE + 2  # after "SunS"
    for model_id in MODEL_IDS:
        points: dict[str, Point] = {}
        offset = 0
        for name, typ, size in official_point_list(model_id):
            if typ not in _TYPES:
                raise MapError(f"model {model_id} point {name}: unsupported type {typ}")
            points[name] = Point(name, typ, size, address + offset)
            offset += size
        models[model_id] = Model(model_id, address, offset - 2, points)
        address += offset
    return models


MODELS = _build_models()
END_ADDRESS = MODELS[VENDOR_MODEL_ID].address + MODELS[VENDOR_MODEL_ID].length + 2
assert END_ADDRESS + 2 - BASE == MAP_LEN, "map length differs from ESS.md"


def _plan_reads() -> tuple[tuple[int, int], ...]:
    """Group whole models into reads of at most 125 registers, so no value or its SF is ever torn."""
    blocks = [(BASE, 2)] + [(m.address, m.length + 2) for m in MODELS.values()] + [(END_ADDRESS, 2)]
    reads: list[tuple[int, int]] = []
    for start, count in blocks:
        if reads and reads[-1][1] + count <= MAX_READ:
            reads[-1] = (reads[-1][0], reads[-1][1] + count)
        else:
            reads.append((start, count))
    return tuple(reads)


READS = _plan_reads()  # ((40000, 122), (40122, 107), (40229, 108))

INVERTER_FAULT_STATE = 7
BATTERY_FAULT_STATE = 99


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Static nameplate data: model 1 strings and the storage ratings in models 124/802."""

    manufacturer: str = "ESSX"
    model: str = "SIM-ESS"
    version: str = "1.0"
    serial: str = ""
    max_charge_w: int | None = None
    max_discharge_w: int | None = None
    reserve_pct: int | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded poll of a site. ``None`` = the device reported "not implemented" (never zero).

    Powers in W (grid + = import, battery + = discharge), energies in integer Wh (lifetime counters).
    ``soc_pct`` is a Decimal so the device's 0.1 % resolution is kept exactly (e.g. ``Decimal("57.3")``).
    ``received_at`` is set by the reader when the response arrives and is ignored by ``==``.
    """

    pv_w: int | None = None
    load_w: int | None = None
    grid_w: int | None = None
    battery_w: int | None = None
    soc_pct: Decimal | None = None
    capacity_wh: int | None = None
    pv_wh: int | None = None
    load_wh: int | None = None
    import_wh: int | None = None
    export_wh: int | None = None
    battery_charge_wh: int | None = None
    battery_discharge_wh: int | None = None
    inverter_state: int | None = None
    inverter_alarms: int | None = None
    battery_state: int | None = None
    battery_alarms: int | None = None
    charge_state: int | None = None  # 124.ChaSt: 3 discharging, 4 charging, 6 holding
    meter_events: int | None = None
    alarm_code: int | None = None
    heartbeat: int | None = None
    device_time: datetime | None = None
    received_at: datetime | None = field(default=None, compare=False)
    # wall seconds from the first request to the last answer: a device that updates between the reads of
    # one poll serves counters that far apart (validation allows for it); set by the reader
    read_wall_s: float = field(default=0.0, compare=False)


# (reading field, model, point, scale factor point, scale factor written by the encoder)
_SCALED: tuple[tuple[str, int, str, str, int], ...] = (
    ("pv_w", 103, "W", "W_SF", 0),
    ("pv_wh", 103, "WH", "WH_SF", 0),
    ("grid_w", 203, "W", "W_SF", 0),
    ("export_wh", 203, "TotWhExp", "TotWh_SF", 0),
    ("import_wh", 203, "TotWhImp", "TotWh_SF", 0),
    ("capacity_wh", 802, "WHRtg", "WHRtg_SF", 1),
    ("battery_w", 802, "W", "W_SF", 0),
    ("load_w", VENDOR_MODEL_ID, "LoadW", "W_SF", 0),
    ("load_wh", VENDOR_MODEL_ID, "LoadWh", "Wh_SF", 0),
    ("battery_charge_wh", VENDOR_MODEL_ID, "BatChaWh", "Wh_SF", 0),
    ("battery_discharge_wh", VENDOR_MODEL_ID, "BatDisChaWh", "Wh_SF", 0),
)
_PLAIN: tuple[tuple[str, int, str], ...] = (
    ("inverter_state", 103, "St"),
    ("inverter_alarms", 103, "Evt1"),
    ("meter_events", 203, "Evt"),
    ("charge_state", 124, "ChaSt"),
    ("battery_state", 802, "State"),
    ("battery_alarms", 802, "Evt1"),
    ("alarm_code", VENDOR_MODEL_ID, "AlmCode"),
    ("heartbeat", VENDOR_MODEL_ID, "Hb"),
)
SOC_SF = -1


class _Image:
    """A 337-register image addressed by absolute PDU address."""

    def __init__(self, regs: list[int]) -> None:
        self.regs = regs

    def get(self, p: Point) -> int:
        i = p.address - BASE
        return self.regs[i] if p.size == 1 else (self.regs[i] << 16) | self.regs[i + 1]

    def put(self, p: Point, raw: int) -> None:
        i = p.address - BASE
        if p.size == 1:
            self.regs[i] = raw & 0xFFFF
        else:
            self.regs[i], self.regs[i + 1] = (raw >> 16) & 0xFFFF, raw & 0xFFFF

    def value(self, p: Point) -> int | None:
        """Raw value as a Python int (signed where the type is), or None for the sentinel."""
        raw = self.get(p)
        if raw == _TYPES[p.type][1]:
            return None
        if p.type in ("int16", "sunssf") and raw & 0x8000:
            return raw - 0x10000
        return raw

    def put_str(self, p: Point, text: str) -> None:
        data = text.encode()[: p.size * 2].ljust(p.size * 2, b"\0")
        for k in range(p.size):
            self.regs[p.address - BASE + k] = (data[2 * k] << 8) | data[2 * k + 1]

    def get_str(self, p: Point) -> str | None:
        i = p.address - BASE
        data = b"".join(r.to_bytes(2, "big") for r in self.regs[i : i + p.size]).rstrip(b"\0")
        return data.decode(errors="replace") or None


def _to_raw(value: int | Decimal, sf: int, typ: str) -> int:
    if sf == 0 and isinstance(value, int):
        raw = value  # the common case, without the Decimal detour (encode runs once per device update)
    else:
        raw = int(Decimal(value).scaleb(-sf).to_integral_value(ROUND_HALF_EVEN))
    lo, hi = {"int16": (-0x7FFF, 0x7FFF), "uint16": (0, 0xFFFE), "acc32": (1, 0xFFFFFFFF)}[typ]
    if typ == "acc32":
        raw %= 1 << 32  # lifetime counters wrap like the real registers do
    if not lo <= raw <= hi:
        raise ValueError(f"{value} does not fit {typ} with scale factor {sf}")
    return raw


@lru_cache(maxsize=4096)
def _template(info: DeviceInfo) -> tuple[int, ...]:
    """Everything that does not change between polls: marker, headers, sentinels, nameplate, SFs."""
    img = _Image([0] * MAP_LEN)
    img.regs[0:2] = SUNS
    for model in MODELS.values():
        for p in model.points.values():
            if p.type != "string":
                img.put(p, _TYPES[p.type][1])
        img.put(model["ID"], model.id)
        img.put(model["L"], model.length)
    img.regs[END_ADDRESS - BASE : END_ADDRESS - BASE + 2] = [END_MODEL, 0]
    common, storage, battery = MODELS[1], MODELS[124], MODELS[802]
    for name, text in (("Mn", info.manufacturer), ("Md", info.model), ("Vr", info.version)):
        img.put_str(common[name], text)
    img.put_str(common["SN"], info.serial)
    img.put(common["DA"], 1)
    for _, mid, _, sf_point, sf in _SCALED:
        img.put(MODELS[mid][sf_point], sf)
    img.put(storage["ChaState_SF"], SOC_SF)
    img.put(battery["SoC_SF"], SOC_SF)
    # Ratings are informative only (the collector reads capacity from 802.WHRtg).
    for model, point, sf_point, value in (
        (storage, "WChaMax", "WChaMax_SF", info.max_charge_w),
        (storage, "MinRsvPct", "MinRsvPct_SF", info.reserve_pct),
        (battery, "WChaRteMax", "WChaDisChaMax_SF", info.max_charge_w),
        (battery, "WDisChaRteMax", "WChaDisChaMax_SF", info.max_discharge_w),
    ):
        if value is not None:
            img.put(model[sf_point], 0)
            img.put(model[point], value)
    return tuple(img.regs)


def encode(reading: Reading, info: DeviceInfo | None = None) -> list[int]:
    """The full register image 40000..40336 for a reading; None fields become the type's sentinel."""
    img = _Image(list(_template(info or DeviceInfo())))
    for fname, mid, point, _, sf in _SCALED:
        if (value := getattr(reading, fname)) is not None:
            img.put(MODELS[mid][point], _to_raw(value, sf, MODELS[mid][point].type))
    for fname, mid, point in _PLAIN:
        if (value := getattr(reading, fname)) is not None:
            img.put(MODELS[mid][point], value)
    if reading.soc_pct is not None:
        raw = _to_raw(reading.soc_pct, SOC_SF, "uint16")
        img.put(MODELS[124]["ChaState"], raw)
        img.put(MODELS[802]["SoC"], raw)
    if reading.charge_state is not None:
        img.put(MODELS[802]["ChaSt"], reading.charge_state)
    if reading.device_time is not None:
        img.put(MODELS[VENDOR_MODEL_ID]["Tms"], int(reading.device_time.timestamp()))
    return img.regs


def check_map(regs: Sequence[int]) -> None:
    """Raise MapError unless regs (40000..40336) carry the SunS marker and exactly our models."""
    if len(regs) != MAP_LEN:
        raise MapError(f"expected {MAP_LEN} registers, got {len(regs)}")
    if tuple(regs[0:2]) != SUNS:
        raise MapError("SunS marker missing at 40000")
    for model in MODELS.values():
        got = (regs[model.address - BASE], regs[model.address - BASE + 1])
        if got != (model.id, model.length):
            raise MapError(f"expected model {model.id} L={model.length} at {model.address}, got {got}")
    if regs[END_ADDRESS - BASE] != END_MODEL:
        raise MapError(f"end model missing at {END_ADDRESS}")


def _scaled(raw: int | None, sf: int | None) -> Decimal | None:
    # SunSpec allows scale factors -10..10; anything else is as unusable as a missing value.
    if raw is None or sf is None or not -10 <= sf <= 10:
        return None
    return Decimal(raw).scaleb(sf)


def _scaled_int(raw: int | None, sf: int | None) -> int | None:
    """raw x 10^sf rounded half to even, in integers (the same result as the Decimal route, faster)."""
    if raw is None or sf is None or not -10 <= sf <= 10:
        return None
    if sf >= 0:
        return raw * 10**sf
    d = 10**-sf
    q, r = divmod(raw, d)  # floor division: 0 <= r < d, also for negative raw
    return q + 1 if 2 * r > d or (2 * r == d and q & 1) else q


# The decoder reads every point it needs with ONE precompiled struct over the 674 payload bytes (the
# three responses joined): unused registers are pad bytes, signed types unpack signed, 32-bit points
# unpack as one value. Each field is (struct code, sentinel in the unpacked domain).
_CODES = {
    "int16": ("h", -0x8000),
    "sunssf": ("h", -0x8000),
    "uint16": ("H", 0xFFFF),
    "enum16": ("H", 0xFFFF),
    "bitfield16": ("H", 0xFFFF),
    "acc32": ("I", 0),
    "uint32": ("I", 0xFFFFFFFF),
    "bitfield32": ("I", 0xFFFFFFFF),
}


def _field_plan() -> tuple[
    struct.Struct, dict[tuple[int, str], int], tuple[int | None, ...], tuple[int, ...]
]:
    """(struct, index of each (model, point), sentinel per index, indexes of the map's fixed words)."""
    fixed = [BASE, BASE + 1, END_ADDRESS] + [m.address + k for m in MODELS.values() for k in (0, 1)]
    wanted: dict[int, tuple[str, int | None, tuple[int, str] | None]] = {a: ("H", None, None) for a in fixed}
    names = [(mid, point) for _, mid, point, _, _ in _SCALED] + [(mid, sf) for _, mid, _, sf, _ in _SCALED]
    names += [(mid, point) for _, mid, point in _PLAIN]
    names += [
        (802, "SoC"),
        (802, "SoC_SF"),
        (124, "ChaState"),
        (124, "ChaState_SF"),
        (VENDOR_MODEL_ID, "Tms"),
    ]
    for mid, point in names:
        p = MODELS[mid][point]
        wanted[p.address] = (*_CODES[p.type], (mid, point))
    fmt, at = ">", BASE
    index: dict[tuple[int, str], int] = {}
    sentinels: list[int | None] = []
    fixed_index: list[int] = []
    for address in sorted(wanted):
        code, sentinel, key = wanted[address]
        if address > at:
            fmt += f"{2 * (address - at)}x"
        if key is None:
            fixed_index.append(len(sentinels))
        else:
            index[key] = len(sentinels)
        fmt += code
        sentinels.append(sentinel)
        at = address + (2 if code == "I" else 1)
    fmt += f"{2 * (BASE + MAP_LEN - at)}x"
    return struct.Struct(fmt), index, tuple(sentinels), tuple(fixed_index)


_FIELDS, _INDEX, _SENTINELS, _FIXED = _field_plan()
_MAP_WORDS = struct.Struct(f">{MAP_LEN}H")
_FIXED_WORDS = tuple(_FIELDS.unpack(_MAP_WORDS.pack(*_template(DeviceInfo())))[i] for i in _FIXED)
_SCALED_IX = tuple((fname, _INDEX[mid, point], _INDEX[mid, sf]) for fname, mid, point, sf, _ in _SCALED)
_PLAIN_IX = tuple((fname, _INDEX[mid, point]) for fname, mid, point in _PLAIN)
_SOC_IX = (_INDEX[802, "SoC"], _INDEX[802, "SoC_SF"], _INDEX[124, "ChaState"], _INDEX[124, "ChaState_SF"])
_TMS_IX = _INDEX[VENDOR_MODEL_ID, "Tms"]


def decode(regs: Sequence[int], *, received_at: datetime | None = None) -> Reading:
    """Decode the 337 registers of the three reads (concatenated) into a Reading."""
    if len(regs) != MAP_LEN:
        raise MapError(f"expected {MAP_LEN} registers, got {len(regs)}")
    return decode_payload(_MAP_WORDS.pack(*regs), received_at=received_at)


def decode_payload(
    payload: bytes, *, received_at: datetime | None = None, read_wall_s: float = 0.0
) -> Reading:
    """Decode the 674 payload bytes of the three reads (joined, big-endian words) into a Reading."""
    if len(payload) != 2 * MAP_LEN:
        raise MapError(f"expected {MAP_LEN} registers, got {len(payload) / 2:g}")
    raw = _FIELDS.unpack(payload)
    if tuple(raw[i] for i in _FIXED) != _FIXED_WORDS:
        check_map(_MAP_WORDS.unpack(payload))  # raises MapError with the exact difference
        raise MapError("not the ESS SunSpec map")
    v = [None if x == s else x for x, s in zip(raw, _SENTINELS, strict=True)]
    values: dict[str, Any] = {f: _scaled_int(v[i], v[j]) for f, i, j in _SCALED_IX}
    for f, i in _PLAIN_IX:
        values[f] = v[i]
    soc, soc_sf, cha, cha_sf = (v[i] for i in _SOC_IX)
    pct = _scaled(soc, soc_sf)
    if pct is None:  # 124.ChaState carries the same quantity; use it when the battery model lacks it
        pct = _scaled(cha, cha_sf)
    tms = v[_TMS_IX]
    return Reading(
        **values,
        soc_pct=pct,
        device_time=None if tms is None else datetime.fromtimestamp(tms, UTC),
        received_at=received_at,
        read_wall_s=read_wall_s,
    )


def decode_info(regs: Sequence[int]) -> DeviceInfo:
    check_map(regs)
    img = _Image(list(regs))
    common, storage, battery = MODELS[1], MODELS[124], MODELS[802]
    return DeviceInfo(
        manufacturer=img.get_str(common["Mn"]) or "",
        model=img.get_str(common["Md"]) or "",
        version=img.get_str(common["Vr"]) or "",
        serial=img.get_str(common["SN"]) or "",
        max_charge_w=img.value(storage["WChaMax"]),
        max_discharge_w=img.value(battery["WDisChaRteMax"]),
        reserve_pct=img.value(storage["MinRsvPct"]),
    )


# ---- model 124: storage controls -------------------------------------------------------------------------
STORAGE = MODELS[124]
STORAGE_BLOCK = (STORAGE.address, STORAGE.length + 2)  # one read covers ID, L and every point with its SF
STORCTL_CHARGE, STORCTL_DISCHARGE = 1, 2  # StorCtl_Mod bits: InWRte limits charging, OutWRte discharging

# (StorageControls field, model 124 point)
_CONTROL_POINTS: tuple[tuple[str, str], ...] = (
    ("w_cha_max", "WChaMax"),
    ("w_cha_max_sf", "WChaMax_SF"),
    ("mod", "StorCtl_Mod"),
    ("out_w_rte", "OutWRte"),
    ("in_w_rte", "InWRte"),
    ("rate_sf", "InOutWRte_SF"),
    ("win_tms", "InOutWRte_WinTms"),
    ("rvrt_tms", "InOutWRte_RvrtTms"),
    ("rmp_tms", "InOutWRte_RmpTms"),
    ("min_rsv_pct", "MinRsvPct"),
    ("min_rsv_pct_sf", "MinRsvPct_SF"),
)


@dataclass(frozen=True, slots=True)
class StorageControls:
    """Model 124's control points as raw register values (``None`` = not implemented).

    Rates are ``raw x 10^rate_sf`` percent of ``WChaMax`` (model 124 has no discharge reference point;
    like Fronius, the discharge rate refers to ``WChaMax`` too). With ``StorCtl_Mod`` bit 0 the battery
    power (+ = discharge) stays at or above ``-InWRte``, so a negative InWRte is a minimum discharge;
    with bit 1 it stays at or below ``OutWRte``, so a negative OutWRte is a minimum charge.
    """

    w_cha_max: int | None = None
    w_cha_max_sf: int | None = None
    mod: int | None = None
    out_w_rte: int | None = None
    in_w_rte: int | None = None
    rate_sf: int | None = None
    win_tms: int | None = None
    rvrt_tms: int | None = None  # seconds; 0 = no reversion
    rmp_tms: int | None = None
    min_rsv_pct: int | None = None
    min_rsv_pct_sf: int | None = None

    @property
    def w_cha_max_w(self) -> int | None:
        """WChaMax in W (scale factor applied), None when missing."""
        return _scaled_int(self.w_cha_max, self.w_cha_max_sf)


def encode_controls(regs: list[int], controls: StorageControls) -> None:
    """Write the implemented (not None) control points into a full register image, in place."""
    img = _Image(regs)
    for fname, point in _CONTROL_POINTS:
        if (value := getattr(controls, fname)) is not None:
            img.put(STORAGE[point], value)


def decode_controls(block: Sequence[int]) -> StorageControls:
    """Decode model 124 from its block (``STORAGE_BLOCK``: the ID register onwards, ID and L checked)."""
    start, count = STORAGE_BLOCK
    if len(block) != count or (block[0], block[1]) != (STORAGE.id, STORAGE.length):
        raise MapError(f"expected model 124 L={STORAGE.length} at {start}, got {tuple(block[:2])}")
    regs = [0] * MAP_LEN
    regs[start - BASE : start - BASE + count] = block
    img = _Image(regs)
    return StorageControls(**{f: img.value(STORAGE[p]) for f, p in _CONTROL_POINTS})


def writable_addresses() -> dict[int, Point]:
    """Every register address of model 124 the standard marks writable, with its point."""
    names = official_writable_points(STORAGE.id)
    return {STORAGE[n].address: STORAGE[n] for n in names}
