"""ESS sites and everything the collector derives from them: readings, faults, events, slot energies,
the anchored ledger slots, production rewards and the collector's lease.

Energy is integer Wh, power integer W, state of charge integer tenths of a percent (the device's own
resolution), time timezone-aware UTC. Counters are lifetime acc32 values, so they need 64-bit columns.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from common.dbtypes import BigAmount, utc_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL needs 64 bits for a table that grows by
# one row per site per poll (1,000 sites at 1 s overflow int32 in 25 days).
BigId = BigInteger().with_variant(Integer(), "sqlite")

ENERGY_FIELDS = ("pv_wh", "load_wh", "import_wh", "export_wh", "battery_charge_wh", "battery_discharge_wh")
POWER_FIELDS = ("pv_w", "load_w", "grid_w", "battery_w")


def _bigint(nullable: bool = True) -> Column[int]:
    return Column(BigInteger, nullable=nullable)


class SiteStatus(StrEnum):
    """What the collector last saw of a site (`Site.status`, ess_collector/faults.py: site_status)."""

    unknown = "unknown"  # registered, no answer seen yet
    online = "online"
    offline = "offline"  # communication lost
    fault = "fault"  # answering, with an open fault


class SlotStatus(StrEnum):
    """A site-slot's energy (`SlotEnergy.status`): enough good polls, gaps filled from the counters, or
    too few to tell."""

    complete = "complete"
    recovered = "recovered"
    incomplete = "incomplete"


MEASURED = (SlotStatus.complete, SlotStatus.recovered)  # a slot's energy that counts (anchoring, settlement)


class LedgerStatus(StrEnum):
    """A slot's commitment on the MeterLedger (`LedgerSlot.status`): empty (nothing complete: not
    anchored) | submitted -> confirmed | failed (retried) | conflict (the chain holds another record)."""

    empty = "empty"
    submitted = "submitted"
    confirmed = "confirmed"
    failed = "failed"
    conflict = "conflict"


class RewardStatus(StrEnum):
    """A production reward's mint (`ProductionReward.status`): no_wallet (waits for one) | submitted ->
    confirmed | failed."""

    no_wallet = "no_wallet"
    submitted = "submitted"
    confirmed = "confirmed"
    failed = "failed"


class Site(SQLModel, table=True):
    """One ESS installation reachable over Modbus TCP."""

    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("host", "port", "device_id", name="uq_site_endpoint"),)

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="users.id", index=True)
    name: str = Field(max_length=100)
    host: str = Field(max_length=253)  # stored lower-case, so the endpoint is unique however it is typed
    port: int
    device_id: int
    pv_nameplate_w: int
    battery_capacity_wh: int
    reserve_soc_pct: int
    # The battery's power limits (AC side) as the owner declares them from the nameplate; None: unknown,
    # counted as SupplyConfig.battery_power_pct of the capacity per hour.
    max_charge_w: int | None = None
    max_discharge_w: int | None = None
    enabled: bool = True
    status: str = Field(default=SiteStatus.unknown, max_length=16)  # SiteStatus
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    disabled_at: datetime | None = Field(default=None, sa_column=utc_column())
    last_seen_at: datetime | None = Field(default=None, sa_column=utc_column())  # last answer


class SiteReading(SQLModel, table=True):
    """Every poll of a site, good or not. ``accepted`` readings carry the energy the collector counted
    since ``interval_start`` (the previous accepted reading): the counters were checked, never subtracted
    across a reset, so slot energies are sums of these deltas."""

    __tablename__ = "site_readings"
    __table_args__ = (Index("ix_site_readings_site_ts", "site_id", "ts"),)

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    site_id: int = Field(foreign_key="sites.id")
    ts: datetime = Field(sa_column=utc_column(nullable=False))
    quality: str = Field(max_length=16)  # ok | missing | stale | out_of_range | reset
    detail: str | None = Field(default=None, max_length=300)
    pv_w: int | None = None
    load_w: int | None = None
    grid_w: int | None = None  # + import
    battery_w: int | None = None  # + discharge
    soc_tenths: int | None = None  # 0.1 %
    pv_wh: int | None = Field(default=None, sa_column=_bigint())
    load_wh: int | None = Field(default=None, sa_column=_bigint())
    import_wh: int | None = Field(default=None, sa_column=_bigint())
    export_wh: int | None = Field(default=None, sa_column=_bigint())
    battery_charge_wh: int | None = Field(default=None, sa_column=_bigint())
    battery_discharge_wh: int | None = Field(default=None, sa_column=_bigint())
    heartbeat: int | None = None
    device_time: datetime | None = Field(default=None, sa_column=utc_column())
    inverter_state: int | None = None
    battery_state: int | None = None
    alarm_code: int | None = None
    accepted: bool = False
    interval_start: datetime | None = Field(default=None, sa_column=utc_column())
    d_pv_wh: int | None = None
    d_load_wh: int | None = None
    d_import_wh: int | None = None
    d_export_wh: int | None = None
    d_battery_charge_wh: int | None = None
    d_battery_discharge_wh: int | None = None


class SiteFault(SQLModel, table=True):
    """A fault opens when a condition is seen (for some, for N polls in a row) and closes when it ends.
    At most one open fault per site and kind (a partial unique index on both databases)."""

    __tablename__ = "site_faults"
    __table_args__ = (
        Index(
            "uq_site_faults_open",
            "site_id",
            "kind",
            unique=True,
            sqlite_where=text("closed_at IS NULL"),
            postgresql_where=text("closed_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    kind: str = Field(max_length=24)  # inverter_fault | battery_fault | comm_lost | stale | imbalance
    detail: str | None = Field(default=None, max_length=300)
    opened_at: datetime = Field(sa_column=utc_column(nullable=False))
    closed_at: datetime | None = Field(default=None, sa_column=utc_column())


class SiteEvent(SQLModel, table=True):
    """Things worth an audit trail that are not faults: counter resets and re-baselines, glitches,
    out-of-range values, registration, enabling and disabling."""

    __tablename__ = "site_events"
    __table_args__ = (Index("ix_site_events_site_ts", "site_id", "ts"),)

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    site_id: int = Field(foreign_key="sites.id")
    ts: datetime = Field(sa_column=utc_column(nullable=False))
    kind: str = Field(max_length=24)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class SlotEnergy(SQLModel, table=True):
    """A site's energy in one UTC-aligned slot, from the accepted counter deltas.

    Frozen once ``leaf`` is set (the record is part of an anchored Merkle tree)."""

    __tablename__ = "slot_energies"
    __table_args__ = (UniqueConstraint("site_id", "slot_start", name="uq_slot_energy"),)

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    site_id: int = Field(foreign_key="sites.id")
    slot_start: datetime = Field(sa_column=utc_column(nullable=False, index=True))
    slot_minutes: int
    status: str = Field(max_length=16)  # SlotStatus
    good_polls: int
    expected_polls: int
    pv_wh: int | None = None
    load_wh: int | None = None
    import_wh: int | None = None
    export_wh: int | None = None
    battery_charge_wh: int | None = None
    battery_discharge_wh: int | None = None
    pv_w_min: int | None = None
    pv_w_avg: int | None = None
    pv_w_max: int | None = None
    load_w_min: int | None = None
    load_w_avg: int | None = None
    load_w_max: int | None = None
    grid_w_min: int | None = None
    grid_w_avg: int | None = None
    grid_w_max: int | None = None
    battery_w_min: int | None = None
    battery_w_avg: int | None = None
    battery_w_max: int | None = None
    soc_start_tenths: int | None = None
    soc_end_tenths: int | None = None
    leaf: str | None = Field(default=None, max_length=66)
    computed_at: datetime = Field(sa_column=utc_column(nullable=False))


class LedgerSlot(SQLModel, table=True):
    """One slot's commitment on the MeterLedger contract (or the note that nothing was complete)."""

    __tablename__ = "ledger_slots"
    __table_args__ = (UniqueConstraint("slot_start", name="uq_ledger_slot"),)

    id: int | None = Field(default=None, primary_key=True)
    slot_start: datetime = Field(sa_column=utc_column(nullable=False))
    slot_minutes: int
    root: str | None = Field(default=None, max_length=66)
    count: int
    pv_wh: int = Field(sa_column=_bigint(False))
    load_wh: int = Field(sa_column=_bigint(False))
    import_wh: int = Field(sa_column=_bigint(False))
    export_wh: int = Field(sa_column=_bigint(False))
    battery_charge_wh: int = Field(sa_column=_bigint(False))
    battery_discharge_wh: int = Field(sa_column=_bigint(False))
    contract: str | None = Field(default=None, max_length=42)
    status: str = Field(max_length=16, index=True)  # LedgerStatus
    tx_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("outgoing_tx.id")))
    tx_hash: str | None = Field(default=None, max_length=66)
    block_number: int | None = None
    error: str | None = Field(default=None, max_length=500)
    # The production reward policy in force when the slot was anchored (coin base units per kWh; None =
    # off), so switching the policy on never pays for the past; rewards_done once its rows exist.
    reward_per_kwh: int | None = Field(default=None, sa_column=Column(BigAmount, nullable=True))
    rewards_done: bool = False
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


class ProductionReward(SQLModel, table=True):
    """The optional mint of N coin per anchored PV kWh: one row per site and slot, never two."""

    __tablename__ = "production_rewards"
    __table_args__ = (UniqueConstraint("site_id", "slot_start", name="uq_production_reward"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="sites.id")
    slot_start: datetime = Field(sa_column=utc_column(nullable=False))
    owner_id: int = Field(foreign_key="users.id", index=True)
    pv_wh: int
    amount: int = Field(sa_column=Column(BigAmount, nullable=False))  # coin base units
    to_address: str | None = Field(default=None, max_length=42)
    status: str = Field(max_length=16, index=True)  # RewardStatus
    tx_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("outgoing_tx.id")))
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))
