"""Chain access: a web3 connection that fails over between RPC URLs and checks the chain id."""

from __future__ import annotations

import logging
import threading
from typing import Any

import requests
from web3 import Web3
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

log = logging.getLogger(__name__)


class ChainIdMismatch(RuntimeError):
    pass


class ChainUnreachable(RuntimeError):
    pass


class FailoverHTTPProvider(JSONBaseProvider):
    """Sends each request to the current URL; on a connection error, moves to the next and retries.

    Only transport failures fail over: a JSON-RPC error answer is returned as it is, because re-sending a
    request that a node already processed is only safe for reads and for identical signed bytes.
    """

    def __init__(self, urls: list[str], timeout: float = 10.0) -> None:
        super().__init__()
        if not urls:
            raise ValueError("at least one RPC URL is needed")
        self.urls = list(urls)
        self.timeout = timeout
        self._current = 0
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    @property
    def current_url(self) -> str:
        return self.urls[self._current]

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        body = self.encode_rpc_request(method, params)
        last: Exception | None = None
        for attempt in range(len(self.urls)):
            index = (self._current + attempt) % len(self.urls)
            url = self.urls[index]
            try:
                resp = self._session().post(
                    url, data=body, headers={"Content-Type": "application/json"}, timeout=self.timeout
                )
                resp.raise_for_status()
            except (requests.ConnectionError, requests.Timeout, requests.HTTPError) as exc:
                last = exc
                log.warning("rpc endpoint failed, trying the next", extra={"fields": {"url": url}})
                continue
            if index != self._current:
                self._current = index
            return self.decode_rpc_response(resp.content)
        raise ChainUnreachable(f"no RPC endpoint answered ({len(self.urls)} tried): {last}")

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """One HTTP round trip for many read calls (JSON-RPC batch); results in call order."""
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        last: Exception | None = None
        for attempt in range(len(self.urls)):
            url = self.urls[(self._current + attempt) % len(self.urls)]
            try:
                resp = self._session().post(url, json=body, timeout=self.timeout)  # type: ignore[arg-type]
                resp.raise_for_status()
            except (requests.ConnectionError, requests.Timeout, requests.HTTPError) as exc:
                last = exc
                continue
            by_id = {r["id"]: r for r in resp.json()}
            out = []
            for i in range(len(calls)):
                r = by_id[i]
                if "error" in r:
                    raise ValueError(r["error"])
                out.append(r["result"])
            return out
        raise ChainUnreachable(f"no RPC endpoint answered: {last}")

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            return "result" in self.make_request(RPCEndpoint("eth_chainId"), [])
        except ChainUnreachable:
            return False


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
