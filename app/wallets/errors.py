"""The wallets domain's refusals, each rendered as `{error, detail}` with its status code."""

from __future__ import annotations

from app.core.errors import AppError


class WrongPin(AppError):
    status_code = 403


class WalletLocked(AppError):
    status_code = 423


class OtpRequired(AppError):
    status_code = 403


class WrongOtp(AppError):
    status_code = 403


class OtpLocked(AppError):
    status_code = 423


class LinkRejected(AppError):
    status_code = 422
