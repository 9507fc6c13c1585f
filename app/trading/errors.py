"""The trading domain's refusals (rendered as {"error": Name, "detail": ...})."""

from __future__ import annotations

from app.core.errors import AppError


class ProfileRejected(AppError):
    """A setting the agent could not act on (a price outside the band, a limit above the balance...)."""

    status_code = 422


class ProfileNotAuthorized(AppError):
    """Enabling needs the wallet's authorisation: PIN (and code) or an EIP-712 signature."""

    status_code = 422
