"""Annotated types for what a request may carry in a path, a query or a body: only what we can store.

FastAPI turns a failed bound into a 422 `ValidationError` and writes the bound into the OpenAPI document,
so clients (and schemathesis) see it. Without them an id beyond 2^31 reached PostgreSQL's integer columns
and a time in year 1 or 9999 overflowed the slot arithmetic: both were 500s.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from annotated_types import Ge, Le
from pydantic import AfterValidator, AwareDatetime

from common.clock import EARLIEST, LATEST, in_range

MAX_ROW_ID = 2**31 - 1  # PostgreSQL `integer`, the type of our id, seq and block number columns

RowId = Annotated[int, Ge(1), Le(MAX_ROW_ID)]
"""The id of a row (a user, a site, a coin operation, an audit entry)."""

RowCursor = Annotated[int, Ge(0), Le(MAX_ROW_ID)]
"""Where a listing resumes: after this id (0: from the start)."""

BlockNumber = Annotated[int, Ge(0), Le(MAX_ROW_ID)]


def _bounded_utc(value: datetime) -> datetime:
    if not in_range(value):
        raise ValueError(f"times must lie between {EARLIEST.year} and {LATEST.year} (UTC)")
    return value.astimezone(UTC)


UtcTime = Annotated[AwareDatetime, AfterValidator(_bounded_utc)]
"""A time with a zone (e.g. 2026-06-01T10:15:00Z or +09:00), between 1970 and 9000, given back in UTC."""
