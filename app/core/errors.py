"""Typed errors, rendered by one handler as {"error": Name, "detail": ...}."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status_code = 400
    headers: dict[str, str] | None = None  # e.g. Retry-After on a 429

    def __init__(self, detail: Any = None) -> None:
        super().__init__(detail)
        self.detail = detail if detail is not None else self.__doc__ or type(self).__name__

    @property
    def name(self) -> str:
        return type(self).__name__


class BadRequest(AppError):
    """The request is malformed."""

    status_code = 400


class InvalidAmount(AppError):
    status_code = 422


class InvalidAddress(AppError):
    status_code = 422


class Unauthorized(AppError):
    """Not authenticated."""

    status_code = 401


class Forbidden(AppError):
    """Not allowed for this user."""

    status_code = 403


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class MissingIdempotencyKey(AppError):
    """This route moves money: send an Idempotency-Key header."""

    status_code = 400


class IdempotencyKeyReused(AppError):
    """This Idempotency-Key was used with another request body."""

    status_code = 422


class RequestInProgress(AppError):
    """A request with this Idempotency-Key is still in progress."""

    status_code = 409


class TooManyRequests(AppError):
    status_code = 429

    def __init__(self, detail: Any = None, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        if retry_after is not None:
            self.headers = {"Retry-After": str(max(retry_after, 1))}


class ChainRejected(AppError):
    """The chain would reject this transaction; nothing was sent."""

    status_code = 422


class CoinPaused(AppError):
    """The energy coin is paused: no transfers, mints or burns until an admin unpauses it."""

    status_code = 409


class ServiceUnavailable(AppError):
    status_code = 503
