"""Refusals of a spend's authorisation (rendered as `{error, detail}` by the app's error handler)."""

from __future__ import annotations

from typing import Any

from app.core.errors import AppError


class AuthorizationMissing(AppError):
    status_code = 422


class WrongSigner(AppError):
    status_code = 422

    def __init__(self, detail: Any = None, *, signer: str | None = None) -> None:
        super().__init__(detail)
        self.signer = signer  # the address the signature recovers to; None: the signature is malformed
