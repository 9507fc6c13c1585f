"""The transfers domain's refusals, each rendered as `{error, detail}` with its status code."""

from __future__ import annotations

from app.core.errors import AppError


class AuthorizationExpired(AppError):
    status_code = 422


class NotYetValid(AppError):
    status_code = 422
