"""The relay domain's refusals, each rendered as `{error, detail}` with its status code."""

from __future__ import annotations

from app.core.errors import AppError


class PolicyRejected(AppError):
    status_code = 422


class NotOnThisChain(AppError):
    status_code = 501
