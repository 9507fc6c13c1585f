"""The settlement domain's refusals, each rendered as `{error, detail}` with its status code."""

from __future__ import annotations

from app.core.errors import AppError


class SlotNotOver(AppError):
    status_code = 409
