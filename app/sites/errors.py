"""The sites domain's refusals, each rendered as `{error, detail}` with its status code."""

from __future__ import annotations

from app.core.errors import AppError


class NotAnchoredYet(AppError):
    """This record is not part of an anchored slot (yet)."""

    status_code = 404


class SiteNotAllowed(AppError):
    """The site's host is outside the networks sites may be in (ESSX_SITE_NETWORKS)."""

    status_code = 422
