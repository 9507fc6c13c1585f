"""Sites API models. Energies in integer Wh, powers in W, times ISO 8601 UTC, SoC in percent."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from app.api.params import RowId

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalise_host(value: str) -> str:
    """An IPv4/IPv6 address or an RFC 1123 host name, lower-cased; anything else is refused."""
    host = value.strip().lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if (
        not host
        or len(host) > 253
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()  # "10.0.0.300" is a broken address, not a host name
    ):
        raise ValueError(f"{value!r} is not a valid host name or IP address")
    return host.rstrip(".")


class SiteCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(502, ge=1, le=65535)
    device_id: int = Field(1, ge=1, le=255, description="Modbus unit id")
    pv_nameplate_w: int = Field(gt=0, le=1_000_000)
    battery_capacity_wh: int = Field(ge=0, le=10_000_000)
    reserve_soc_pct: int = Field(10, ge=0, le=100)
    max_charge_w: int | None = Field(
        None, ge=0, le=10_000_000, description="the battery's charge power limit; default: 0.5 C"
    )
    max_discharge_w: int | None = Field(
        None, ge=0, le=10_000_000, description="the battery's discharge power limit; default: 0.5 C"
    )
    owner_id: RowId | None = Field(default=None, description="admins only; default: the caller")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return normalise_host(v)


class FaultPublic(BaseModel):
    id: int
    kind: str
    detail: str | None
    opened_at: datetime
    closed_at: datetime | None


class ReadingPublic(BaseModel):
    ts: datetime
    quality: str
    detail: str | None = None
    pv_w: int | None
    load_w: int | None
    grid_w: int | None
    battery_w: int | None
    soc_pct: float | None
    pv_wh: int | None
    load_wh: int | None
    import_wh: int | None
    export_wh: int | None
    battery_charge_wh: int | None
    battery_discharge_wh: int | None


class SitePublic(BaseModel):
    id: int
    owner_id: int
    name: str
    host: str
    port: int
    device_id: int
    pv_nameplate_w: int
    battery_capacity_wh: int
    reserve_soc_pct: int
    max_charge_w: int | None
    max_discharge_w: int | None
    enabled: bool
    status: str  # unknown | online | offline | fault | disabled
    created_at: datetime
    last_seen_at: datetime | None


class SiteDetail(SitePublic):
    last_reading: ReadingPublic | None
    open_faults: list[FaultPublic]


class EventPublic(BaseModel):
    ts: datetime
    kind: str
    detail: dict[str, object] | str | None


class SlotPublic(BaseModel):
    slot_start: datetime
    slot_minutes: int
    status: str  # complete | recovered | incomplete
    completeness: float  # good polls / expected polls, at most 1
    good_polls: int
    expected_polls: int
    pv_wh: int | None
    load_wh: int | None
    import_wh: int | None
    export_wh: int | None
    battery_charge_wh: int | None
    battery_discharge_wh: int | None
    pv_w: dict[str, int | None]  # min, avg, max
    load_w: dict[str, int | None]
    grid_w: dict[str, int | None]
    battery_w: dict[str, int | None]
    soc_start_pct: float | None
    soc_end_pct: float | None
    anchored: bool


class ProofPublic(BaseModel):
    site_id: int
    slot_start: datetime
    slot_start_unix: int
    energies_wh: list[int]  # pv, load, import, export, battery charge, battery discharge
    leaf: str
    proof: list[str]
    root: str
    contract: str | None
    ledger_status: str
    encoding: str = "keccak256(keccak256(abi.encode(uint64 siteId, uint64 slotStart, uint256[6] energiesWh)))"


class LedgerSlotPublic(BaseModel):
    slot_start: datetime
    slot_start_unix: int
    slot_minutes: int
    status: str  # empty | submitted | confirmed | failed | conflict
    root: str | None
    count: int
    totals_wh: dict[str, int]
    contract: str | None
    tx_hash: str | None
    block_number: int | None
    error: str | None


class SupplyPublic(BaseModel):
    site_id: int
    slot_start: datetime
    slot_minutes: int
    supply_wh: int
    battery_above_reserve_wh: int
    expected_pv_wh: int
    expected_load_wh: int
    soc_pct: float | None
    soc_at: datetime | None
    battery_capacity_wh: int
    reserve_soc_pct: int
    pv_method: str
    load_method: str
    history_days: int
