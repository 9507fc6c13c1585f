"""What the operations routes answer."""

from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    status: str  # always "ok": the process answers


class RelayerCheck(BaseModel):
    address: str
    balance: str  # native coin, decimal
    alert: str | None = None  # set when the balance is below ESSX_RELAYER_MIN_BALANCE


class Readiness(BaseModel):
    """Each check says "ok" or what failed; a part that could not be reached leaves the later ones out."""

    status: str  # ok | unavailable
    database: str | None = None
    chain: str | None = None
    chain_id: int | None = None
    block_number: int | None = None
    contracts: str | None = None  # ok | missing
    relayer: RelayerCheck | None = None
    demo_sites: str | None = None  # why `essx run` could not start its simulated sites
