"""GET /api/v1/stream: the user's own events as Server-Sent Events.

Browsers' EventSource cannot send headers, so the access token may also come as `?access_token=`.
Reconnecting with `Last-Event-ID` (header, or `?last_event_id=`) resumes right after that event: events
are rows written with the change itself, so none is lost between connections.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import ContextDep
from app.api.params import RowCursor
from app.core.errors import Unauthorized
from app.events import service
from app.users.models import User
from app.users.service import user_for_access_token

router = APIRouter(tags=["events"])
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0


@router.get(
    "/stream",
    summary="Your events as Server-Sent Events, resumable after Last-Event-ID",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    ctx: ContextDep,
    authorization: str | None = Header(default=None),
    access_token: str | None = Query(default=None),
    last_event_id: RowCursor | None = Header(default=None, alias="Last-Event-ID"),
    last_event_id_q: RowCursor | None = Query(default=None, alias="last_event_id"),
    once: bool = Query(default=False, description="send what is there and close (for clients that poll)"),
) -> StreamingResponse:
    token = access_token or (authorization.removeprefix("Bearer ").strip() if authorization else None)
    if not token:
        raise Unauthorized("missing bearer token")

    def load_user() -> User:
        with Session(ctx.engine) as s:
            return user_for_access_token(s, ctx.settings, token)

    user = await run_in_threadpool(load_user)
    user_id = user.id or 0
    start = last_event_id if last_event_id is not None else last_event_id_q

    def fetch(after_id: int) -> list[tuple[int, str, str]]:
        with Session(ctx.engine) as s:
            if after_id < 0:
                after_id = service.latest_id(s, user_id)  # a new connection starts from now
                return [(after_id, "", "")]
            return [
                (e.id or 0, e.kind, json.dumps({"at": e.at.isoformat(), **e.data}, default=str))
                for e in service.after(s, user_id, after_id)
            ]

    async def events() -> AsyncIterator[str]:
        last = start if start is not None else -1
        if last < 0:
            last = (await run_in_threadpool(fetch, -1))[0][0]
        yield "retry: 2000\n\n"
        idle = 0.0
        while True:
            batch = await run_in_threadpool(fetch, last)
            for event_id, kind, data in batch:
                last = event_id
                yield f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"
            if once:
                return
            if await request.is_disconnected():
                return
            if batch:
                idle = 0.0
                continue
            await asyncio.sleep(POLL_SECONDS)
            idle += POLL_SECONDS
            if idle >= HEARTBEAT_SECONDS:
                idle = 0.0
                yield ": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
