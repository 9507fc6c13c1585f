"""Bounds on what a request may carry, checked before anything parses it.

FastAPI reads and parses a JSON body before a route's dependencies run, so before authentication: whatever
a stranger sends gets parsed. `RequestLimits` (a plain ASGI middleware) stands in front of that:

- a body larger than ``ESSX_MAX_BODY_BYTES`` is refused with 413, by its Content-Length before a byte is
  read, and by counting while it streams in (a chunked body has no length);
- a JSON body nested deeper than `MAX_JSON_DEPTH` is refused with 422 before the JSON parser sees it (the
  parser recurses once per level, so 100,000 ``[`` would otherwise exhaust the C stack);
- NUL characters are refused in the path, the query, form bodies and JSON strings (PostgreSQL cannot
  store them in text), and so are unpaired UTF-16 surrogates in JSON strings (they cannot be encoded).

The body is read (at most the limit) before the app runs, then handed on unchanged.
"""

from __future__ import annotations

import re
from itertools import accumulate

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError

MAX_JSON_DEPTH = 32


class BodyTooLarge(AppError):
    """The request body is larger than this service accepts."""

    status_code = 413


class NestingTooDeep(AppError):
    """The JSON body is nested deeper than this service accepts."""

    status_code = 422


class InvalidText(AppError):
    """Text in the request contains a character that cannot be stored."""

    status_code = 422


# A JSON string, or an unterminated one up to the end (the parser refuses that at the same place).
# Unrolled (`[^"\\]*(?:\\.[^"\\]*)*`) so it runs in linear time on any input.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# +1 for an opening bracket, -1 (0xFF as a signed byte) for a closing one
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_HEX2 = rb"[0-9a-fA-F]{2}"
# \u0000, a high surrogate escape without a low one after it, a low one without a high one before it
_BAD_ESCAPE = re.compile(
    rb"\\u(?:(0000)|[dD][89abAB]" + _HEX2 + rb"(?!\\u[dD][c-fC-F]" + _HEX2 + rb")"
    rb"|(?<!\\u[dD][89abAB]" + _HEX2 + rb"\\u)[dD][c-fC-F]" + _HEX2 + rb")"
)
_PERCENT_NUL = re.compile(rb"%00")


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, counted the way a parser meets it.

    Brackets inside strings do not count. On malformed input the count is exact up to the first error,
    which is as far as a parser goes; after it, it may over-count, never under-count what was parsed."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    steps = memoryview(brackets.translate(_DEPTH_STEP)).cast("b")
    return max(0, max(accumulate(steps), default=0))


def json_text_problem(body: bytes) -> str | None:
    """Why a JSON text's strings cannot be stored (a NUL, an unpaired surrogate), or None."""
    for match in _BAD_ESCAPE.finditer(body):
        start = backslashes = match.start()
        while backslashes > 0 and body[backslashes - 1] == ord("\\"):
            backslashes -= 1
        if (start - backslashes) % 2:
            continue  # an escaped backslash followed by the letter u: plain text
        if match.group(1):
            return "text may not contain NUL characters (\\u0000)"
        return "text may not contain unpaired UTF-16 surrogates"
    return None


def _media_type(headers: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key == b"content-type":
            return value.split(b";", 1)[0].strip().lower().decode("latin-1")
    return None


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return None


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """HTTP/1.1: a request has a body if it says how long it is or that it comes in chunks."""
    for key, value in headers:
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


def check_target(scope: Scope) -> None:
    """The path and the query carry no NUL."""
    if "\x00" in scope.get("path", "") or _PERCENT_NUL.search(scope.get("query_string", b"")):
        raise InvalidText("the path and the query may not contain NUL characters (%00)")


def check_body(body: bytes, media_type: str | None, max_depth: int = MAX_JSON_DEPTH) -> None:
    """What FastAPI will parse as JSON (no content type, or a JSON one) and form bodies."""
    if media_type is None or media_type == "application/json" or media_type.endswith("+json"):
        # at most as deep as it has opening brackets: most bodies need no closer look
        if body.count(b"[") + body.count(b"{") > max_depth and (depth := json_depth(body)) > max_depth:
            raise NestingTooDeep(
                f"the JSON body is nested {depth} levels deep; at most {max_depth} are accepted"
            )
        problem = json_text_problem(body)
        if problem:
            raise InvalidText(problem)
    elif media_type in ("application/x-www-form-urlencoded", "multipart/form-data") and (
        b"\x00" in body or _PERCENT_NUL.search(body)
    ):
        raise InvalidText("form fields may not contain NUL characters")


async def _respond(send: Send, exc: AppError, *, close: bool) -> None:
    response = JSONResponse(status_code=exc.status_code, content={"error": exc.name, "detail": exc.detail})
    if close:  # the rest of the body stays unread: this connection cannot carry another request
        response.headers["Connection"] = "close"
    await send(
        {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})


class RequestLimits:
    """Refuses requests whose body is too large, whose JSON is too deep, or whose text holds a NUL."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_json_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.serve_http(scope, receive, send)

    async def serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP request: refused here, or passed on to the app (a middleware that wraps this one may call
        it directly, one coroutine less per request)."""
        headers = scope["headers"]
        try:
            check_target(scope)
            if not _has_body(headers):
                await self.app(scope, receive, send)
                return
            declared = _declared_length(headers)
            if declared is not None and declared > self.max_body_bytes:
                raise BodyTooLarge(self._too_large())
            first = await self._read_body(receive)
            if first["type"] == "http.request":
                check_body(first["body"], _media_type(headers), self.max_json_depth)
        except AppError as exc:
            await _respond(send, exc, close=isinstance(exc, BodyTooLarge))
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()  # after the body: http.disconnect, which streaming responses watch for

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> Message:
        """The whole body as one message, or the disconnect that cut it short."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge(self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body_bytes} bytes (ESSX_MAX_BODY_BYTES)"
