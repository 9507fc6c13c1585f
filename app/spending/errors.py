"""Refusals of a spend's authorisation (rendered as `{error, detail}` by the app's error handler)."""

from __future__ import annotations

from app.core.errors import AppError


class AuthorizationMissing(AppError):
    status_code = 422


class WrongSigner(AppError):
    status_code = 422
