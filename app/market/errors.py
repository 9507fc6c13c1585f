"""The market domain's refusals, each rendered as `{error, detail}` with its status code."""

from __future__ import annotations

from app.core.errors import AppError


class NotAllowedToTrade(AppError):
    status_code = 403


class ExceedsSupply(AppError):
    status_code = 422


class SlotRejected(AppError):
    status_code = 422


class PriceOutsideBand(AppError):
    status_code = 422
