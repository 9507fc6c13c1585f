"""Chain access: a web3 connection that fails over between RPC URLs and checks the chain id."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import select
import socket
import ssl
import threading
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import certifi
import requests
from web3 import Web3
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

log = logging.getLogger(__name__)
ZERO_ADDRESS = "0x" + "00" * 20  # the EVM's zero address (no account; ERC-20/KIP-7 mint and burn)


class ChainIdMismatch(RuntimeError):
    pass


class ChainUnreachable(RuntimeError):
    pass


_USER_AGENT = "essx-chain/1"
# The CA bundle `requests` verifies against, so the direct transport trusts exactly the same roots.
_CA_FILE = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


class _Endpoint:
    """One RPC URL, parsed once. A URL the environment routes through a proxy keeps `requests` (which
    applies the proxy settings); every other URL is spoken to over a kept-alive `http.client` connection,
    which costs several times less CPU per call than a `requests` post (its per-call scan of the proxy
    environment and its adapter stack were most of a JSON-RPC call's client CPU: docs/benchmarks.md)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) RPC URL: {parts.scheme}://{parts.hostname or ''}")
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        # What logs and errors may name: a provider's URL often carries its API key in the path or userinfo.
        self.shown = f"{parts.scheme}://{self.host}:{self.port}"
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.proxied = bool(requests.utils.get_environ_proxies(url))


class _HTTPStatusError(Exception):
    pass


# What a dead, restarted, slow or misbehaving endpoint raises on the direct transport; each moves on to
# the next URL, as `requests`' ConnectionError, Timeout and HTTPError do on a proxied URL.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, _HTTPStatusError)
_REQUESTS_ERRORS = (requests.ConnectionError, requests.Timeout, requests.HTTPError)
# A kept-alive connection the server dropped while it idled (a node restart): the request is sent once
# more on a fresh connection to the same URL, no less safe than the failover's re-send to the next URL.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class FailoverHTTPProvider(JSONBaseProvider):
    """Sends each request to the current URL; on a transport failure (connection refused or dropped,
    timeout, an HTTP error status), moves to the next and retries; when none answers, `ChainUnreachable`.

    Only transport failures fail over: a JSON-RPC error answer is returned as it is, because re-sending a
    request that a node already processed is only safe for reads and for identical signed bytes.
    Thread-safe: each thread keeps its own connection per URL.
    """

    def __init__(self, urls: list[str], timeout: float = 10.0) -> None:
        super().__init__()
        if not urls:
            raise ValueError("at least one RPC URL is needed")
        self.urls = list(urls)
        self.timeout = timeout
        self._endpoints = [_Endpoint(url) for url in self.urls]
        self._current = 0
        self._local = threading.local()
        self._ssl: ssl.SSLContext | None = None

    @property
    def current_url(self) -> str:
        return self.urls[self._current]

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        body = self.encode_rpc_request(method, params)
        return cast(RPCResponse, json.loads(self._post(body)))

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """One HTTP round trip for many read calls (JSON-RPC batch); results in call order."""
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        by_id = {r["id"]: r for r in json.loads(self._post(json.dumps(body).encode()))}
        out = []
        for i in range(len(calls)):
            r = by_id[i]
            if "error" in r:
                raise ValueError(r["error"])
            out.append(r["result"])
        return out

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            return "result" in self.make_request(RPCEndpoint("eth_chainId"), [])
        except ChainUnreachable:
            return False

    def _post(self, body: bytes) -> bytes:
        """The body of the first URL's answer, from the current URL on; it becomes the current one."""
        last: str | None = None
        for attempt in range(len(self.urls)):
            index = (self._current + attempt) % len(self.urls)
            endpoint = self._endpoints[index]
            try:
                if endpoint.proxied:
                    resp = self._session().post(
                        endpoint.url, data=body, headers=endpoint.headers, timeout=self.timeout
                    )
                    resp.raise_for_status()
                    content = resp.content
                else:
                    content = self._post_direct(index, endpoint, body)
            except (*_TRANSPORT_ERRORS, *_REQUESTS_ERRORS) as exc:
                # requests' messages quote the URL's path; the direct transport's never do
                reason = type(exc).__name__ if isinstance(exc, requests.RequestException) else str(exc)
                last = f"{endpoint.shown}: {reason}"
                log.warning("rpc endpoint failed, trying the next", extra={"fields": {"endpoint": last}})
                continue
            if index != self._current:
                self._current = index
            return content
        raise ChainUnreachable(f"no RPC endpoint answered ({len(self.urls)} tried): {last}")

    def _post_direct(self, index: int, endpoint: _Endpoint, body: bytes) -> bytes:
        connections: dict[int, http.client.HTTPConnection] | None = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        conn = connections.get(index)
        if conn is not None and conn.sock is not None and _dropped(conn.sock):
            conn.close()  # the server closed it while it idled: http.client reconnects on the next request
        if conn is None:
            conn = connections[index] = self._connection(endpoint)
        reused = conn.sock is not None
        try:
            try:
                return _exchange(conn, endpoint, body)
            except _STALE_CONNECTION:
                if not reused:
                    raise
                conn.close()
                return _exchange(conn, endpoint, body)
        except BaseException:
            conn.close()  # a half-read answer or a timeout leaves the connection unusable
            raise

    def _connection(self, endpoint: _Endpoint) -> http.client.HTTPConnection:
        if not endpoint.https:
            return http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=self.timeout)
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=_CA_FILE)
        return http.client.HTTPSConnection(
            endpoint.host, endpoint.port, timeout=self.timeout, context=self._ssl
        )

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session


def _exchange(conn: http.client.HTTPConnection, endpoint: _Endpoint, body: bytes) -> bytes:
    conn.request("POST", endpoint.target, body, endpoint.headers)
    resp = conn.getresponse()
    content = resp.read()
    if not 200 <= resp.status < 300:
        raise _HTTPStatusError(f"{resp.status} {resp.reason}")
    return content


def _dropped(sock: socket.socket) -> bool:
    """An idle kept-alive socket that is readable has been closed (or sent something unasked) by its peer."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def raw_call(w3: Web3, method: str, params: list[Any]) -> Any:
    """One JSON-RPC call without web3's formatters and middlewares (they cost more CPU than the round trip
    on hot paths); returns the node's ``result`` as sent (hex strings), raises on an error answer."""
    response = w3.provider.make_request(RPCEndpoint(method), params)
    if response.get("error"):
        raise RuntimeError(f"{method} failed: {response['error']}")
    return response.get("result")


def connect(urls: list[str], timeout: float = 10.0) -> Web3:
    w3 = Web3(FailoverHTTPProvider(urls, timeout=timeout))
    # We send only signed raw transactions with our own gas and fees: the middlewares that fill gas prices,
    # resolve ENS names and re-validate transactions (an extra eth_chainId round trip per estimate) are
    # pure overhead on the hot path.
    for name in ("gas_price_strategy", "name_to_address", "validation", "gas_estimate"):
        w3.middleware_onion.remove(name)
    # No ENS either: web3 builds a new ENS client (and a Web3 inside it) on every read of `w3.ens`, and
    # each contract object reads it; addresses here are always hex.
    w3.ens = None  # type: ignore[assignment]
    return w3


def check_chain_id(w3: Web3, expected: int) -> int:
    try:
        actual = int(w3.eth.chain_id)
    except (ChainUnreachable, requests.RequestException) as exc:
        raise ChainUnreachable(str(exc)) from exc
    if actual != expected:
        raise ChainIdMismatch(f"the node reports chain id {actual}, expected {expected}")
    return actual
