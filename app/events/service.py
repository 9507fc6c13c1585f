"""Recording a user's events, in the transaction of the change they describe."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from app.core.security import utcnow
from app.events.models import UserEvent


def emit(session: Session, user_id: int | None, kind: str, **data: Any) -> None:
    if user_id is None:
        return
    session.add(UserEvent(user_id=user_id, kind=kind, at=utcnow(), data=data))


def emit_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Appends many events (dicts of user_id, kind, at, data) in one statement: on hot paths, where the
    ORM's per-object insert adds nothing."""
    if rows:
        session.execute(UserEvent.__table__.insert(), rows)  # type: ignore[attr-defined]


def after(session: Session, user_id: int, last_id: int, limit: int = 200) -> list[UserEvent]:
    return list(
        session.exec(
            select(UserEvent)
            .where(col(UserEvent.user_id) == user_id, col(UserEvent.id) > last_id)
            .order_by(col(UserEvent.id))
            .limit(limit)
        )
    )


def latest_id(session: Session, user_id: int) -> int:
    row = session.exec(
        select(UserEvent.id)
        .where(col(UserEvent.user_id) == user_id)
        .order_by(col(UserEvent.id).desc())
        .limit(1)
    ).first()
    return int(row or 0)
