"""Submitting Kaia-native raw transactions.

A plain JSON-RPC call, never `w3.eth.send_raw_transaction`: with web3py-ext loaded that routes a hex
string of a Kaia type to `eth_sendRawTransaction`, which a Kaia node rejects for these types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from eth_utils import keccak

if TYPE_CHECKING:  # only for the annotation: the codec should not pay for importing web3
    from web3 import Web3

KAIA_SEND_RAW = "kaia_sendRawTransaction"
KLAY_SEND_RAW = "klay_sendRawTransaction"  # the pre-rename alias, for nodes older than Kaia v1


class KaiaRpcError(RuntimeError):
    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})" if code is not None else message)
        self.code = code
        self.data = data


def send_raw_kaia(
    w3_or_rpc_url: Web3 | str,
    raw: bytes,
    *,
    method: str = KAIA_SEND_RAW,
    timeout: float = 10.0,
) -> str:
    """Submit `raw` with kaia_sendRawTransaction and return the 0x-hex transaction hash.

    Re-sending the same bytes is safe (same hash), so callers may retry this; never re-sign instead.
    The node's answer must equal keccak(raw): anything else means we are not talking to a Kaia node.
    """
    if not isinstance(raw, bytes | bytearray):
        raise TypeError("raw must be bytes (a hex string is easy to route to the wrong method)")
    if method not in (KAIA_SEND_RAW, KLAY_SEND_RAW):
        raise ValueError(f"not a Kaia raw-transaction method: {method}")
    params = ["0x" + bytes(raw).hex()]
    response: Any
    if not isinstance(w3_or_rpc_url, str):
        # provider.make_request skips web3's method formatters and middlewares: the call goes out as is.
        response = w3_or_rpc_url.provider.make_request(method, params)  # type: ignore[arg-type]
    else:
        payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        try:
            http = httpx.post(w3_or_rpc_url, json=payload, timeout=timeout)
            http.raise_for_status()
            response = http.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise KaiaRpcError(f"{method} transport failure: {exc}") from exc
    if not isinstance(response, dict):
        raise KaiaRpcError(f"{method}: malformed response {response!r}")
    if response.get("error"):
        error = response["error"]
        if isinstance(error, dict):
            raise KaiaRpcError(str(error.get("message", error)), error.get("code"), error.get("data"))
        raise KaiaRpcError(str(error))
    result = response.get("result")
    expected = "0x" + keccak(bytes(raw)).hex()
    if not isinstance(result, str) or result.lower() != expected:
        raise KaiaRpcError(f"{method} returned {result!r}, expected {expected}")
    return expected
