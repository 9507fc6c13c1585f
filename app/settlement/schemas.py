"""Request bodies of the settlement routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class SettleDecision(BaseModel):
    rule: Literal["contracted", "measured"]
    reason: str = Field(min_length=3, max_length=500)
