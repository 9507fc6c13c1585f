"""The ``dispatch_commands`` table (``ess_collector.dispatcher`` writes it); no app imports, so the app's
model registry can import it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from common.dbtypes import UTCDateTime


class DispatchRecord(SQLModel, table=True):
    """One site's dispatch in one slot: the decision, the write's answer, and the check after the slot."""

    __tablename__ = "dispatch_commands"
    __table_args__ = (UniqueConstraint("site_id", "slot_start", name="uq_dispatch_site_slot"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="sites.id", index=True)
    slot_start: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    issued_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    until: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    sold_wh: int
    expected_pv_wh: int
    expected_load_wh: int
    mode: str | None = Field(default=None, max_length=8)  # floor | ceiling; None = no command needed
    battery_w: int = 0  # + = discharge
    shortfall_wh: int = 0  # beyond the battery's power and energy
    write_status: str | None = Field(default=None, max_length=12)  # accepted | refused | unreachable
    # not_needed | pending (written, slot running) | followed | refused | not_followed | unknown
    status: str = Field(max_length=16)
    detail: str = Field(default="", max_length=300)
    battery_wh: int | None = None  # measured net battery output over the commanded interval
    export_wh: int | None = None
    checked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    released_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
