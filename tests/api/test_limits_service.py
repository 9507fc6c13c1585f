"""A real `essx run` process meets the bodies that used to kill it or make it read 100 MB.

Before app/core/limits.py: 100,000 nested `[` to /auth/register ended the process with SIGSEGV (py_ecc had
raised the recursion limit, FastAPI parsed the JSON before authentication), and a 100 MB body was read
and parsed.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service_process import ServiceProcess

pytestmark = pytest.mark.process  # runs `essx run` as a child process

MB = 1024 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(tmp_path_factory.mktemp("limits") / "data", ESSX_DEMO_SITES="0").start()
    try:
        yield proc
    finally:
        proc.stop()


def _alive(service: ServiceProcess) -> None:
    assert service.proc is not None and service.proc.poll() is None, "the service process died"
    assert httpx.get(f"{service.base}/healthz", timeout=5).status_code == 200


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                return data


def _post_raw(service: ServiceProcess, head: str, body_chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Sends the request until the server answers or hangs up; (the response, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=20)
    sent = 0
    try:
        sock.sendall(head.encode())
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there before the body is through
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        return _read_response(sock), sent
    finally:
        sock.close()


def test_100000_nested_brackets_are_refused_and_the_service_keeps_serving(service: ServiceProcess) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b"[" * 100_000, b'{"a":' * 100_000):
        r = httpx.post(
            f"{service.base}/api/v1/auth/register",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 422 and r.json()["error"] == "NestingTooDeep", r.text
        _alive(service)


def test_a_100_mb_chunked_body_is_cut_off_at_the_limit(service: ServiceProcess) -> None:
    chunk = b" " * (64 * 1024)
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)

    def frames() -> Iterator[bytes]:
        for _ in range(100 * MB // len(chunk)):
            yield frame
        yield b"0\r\n\r\n"

    head = (
        "POST /api/v1/auth/register HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    response, sent = _post_raw(service, head, frames())
    assert response.startswith(b"HTTP/1.1 413"), response[:300]
    assert b'"error":"BodyTooLarge"' in response
    assert (
        sent < 20 * MB
    )  # the server stopped reading soon after the limit (1 MiB); socket buffers hold the rest
    _alive(service)


def test_a_declared_100_mb_body_is_refused_before_it_is_sent(service: ServiceProcess) -> None:
    head = (
        "POST /api/v1/auth/register HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {100 * MB}\r\n\r\n"
    )
    response, sent = _post_raw(service, head, iter([]))
    assert response.startswith(b"HTTP/1.1 413") and sent == 0, response[:300]
    _alive(service)


def test_the_log_shows_no_crash(service: ServiceProcess) -> None:
    _alive(service)
    log = Path(service.log).read_text(errors="replace")
    assert "Segmentation fault" not in log and "RecursionError" not in log


def test_forwarded_for_is_not_believed_from_a_peer_that_is_no_trusted_proxy(service: ServiceProcess) -> None:
    """ESSX_TRUSTED_PROXIES alone says whose X-Forwarded-For counts (app/api/deps.py). uvicorn's own proxy
    handling believed any peer on 127.0.0.1 and rewrote the client's address before the app saw it, so a
    local client escaped the login back-off by naming a new address each time."""
    codes = [
        httpx.post(
            f"{service.base}/api/v1/auth/token",
            data={"username": "nobody@example.com", "password": f"guess-{i}"},
            headers={"X-Forwarded-For": f"192.0.2.{i + 1}"},
            timeout=30,
        ).status_code
        for i in range(5)
    ]
    assert codes[:3] == [401] * 3 and 429 in codes[3:], codes  # one client: three free guesses, then back-off
