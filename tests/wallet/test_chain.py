"""The failover provider against real endpoints: a live anvil, a port nobody listens on, a node that is
restarted, a server that never answers, one that answers with an HTTP error, and a proxy."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler

import pytest

from tests.wallet.http_server import serving
from wallet.chain import ChainUnreachable, FailoverHTTPProvider, check_chain_id, connect, raw_call
from wallet.localchain import LOCAL_CHAIN_ID, AnvilNode, free_port


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    status = 200
    seen: list[str]

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(self.path)
        body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x2a"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(status: int) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Handler,), {"status": status, "seen": seen})
    with serving(handler) as url:
        yield url, seen


@pytest.fixture
def failing_server() -> Iterator[tuple[str, list[str]]]:
    yield from _serve(503)


@pytest.fixture
def fake_proxy() -> Iterator[tuple[str, list[str]]]:
    yield from _serve(200)


def test_fails_over_to_the_second_url_when_the_first_is_down(anvil_url: str) -> None:
    w3 = connect([_dead_url(), anvil_url])
    assert int(raw_call(w3, "eth_chainId", []), 16) == LOCAL_CHAIN_ID
    provider = w3.provider
    assert isinstance(provider, FailoverHTTPProvider)
    assert provider.current_url == anvil_url  # later calls start at the URL that answered
    assert w3.eth.block_number >= 0  # web3's own path goes through the same transport
    assert provider.batch([("eth_chainId", []), ("eth_blockNumber", [])])[0] == hex(LOCAL_CHAIN_ID)


def test_an_http_error_status_fails_over(failing_server: tuple[str, list[str]], anvil_url: str) -> None:
    url, seen = failing_server
    w3 = connect([url, anvil_url])
    assert check_chain_id(w3, LOCAL_CHAIN_ID) == LOCAL_CHAIN_ID
    assert seen == ["/"]


def test_errors_and_logs_name_the_endpoint_not_its_key(caplog: pytest.LogCaptureFixture) -> None:
    """A provider's URL often carries its API key (path or userinfo): only scheme, host and port are told."""
    dead = _dead_url()
    w3 = connect([dead + "/v3/secret-key-1", dead.replace("//", "//user:secret-key-2@") + "/rpc"])
    with caplog.at_level("WARNING"), pytest.raises(ChainUnreachable) as failed:
        raw_call(w3, "eth_blockNumber", [])
    told = str(failed.value) + " ".join(str(r.__dict__) for r in caplog.records)
    assert dead in told and "secret-key" not in told, told


def test_no_url_answering_is_chain_unreachable() -> None:
    w3 = connect([_dead_url(), _dead_url()])
    with pytest.raises(ChainUnreachable, match="2 tried"):
        raw_call(w3, "eth_blockNumber", [])
    assert not w3.provider.is_connected()
    with pytest.raises(ChainUnreachable):
        check_chain_id(w3, LOCAL_CHAIN_ID)


def test_a_node_that_does_not_answer_in_time_is_chain_unreachable() -> None:
    with socket.socket() as listener:  # accepts connections (the backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        w3 = connect([f"http://127.0.0.1:{listener.getsockname()[1]}"], timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ChainUnreachable, match="timed out"):
            raw_call(w3, "eth_blockNumber", [])
        assert time.monotonic() - started < 3


def test_reconnects_after_the_node_restarts() -> None:
    node = AnvilNode(port=free_port(), block_time=None).start()
    try:
        w3 = connect([node.url], timeout=5)
        assert raw_call(w3, "eth_blockNumber", []) == "0x0"  # the thread now keeps a connection open
        node.stop()
        with pytest.raises(ChainUnreachable):
            raw_call(w3, "eth_blockNumber", [])
        node.start()
        assert int(raw_call(w3, "eth_chainId", []), 16) == LOCAL_CHAIN_ID
        node.stop()
        node.start()  # this time no call sees it down: the kept-alive connection is simply stale
        assert int(raw_call(w3, "eth_chainId", []), 16) == LOCAL_CHAIN_ID
        assert w3.eth.chain_id == LOCAL_CHAIN_ID
    finally:
        node.stop()


def test_many_threads_share_one_provider(anvil_url: str) -> None:
    w3 = connect([anvil_url])
    accounts = w3.eth.accounts

    def balance(i: int) -> int:
        return int(raw_call(w3, "eth_getBalance", [accounts[i % len(accounts)], "latest"]), 16)

    with ThreadPoolExecutor(max_workers=16) as pool:
        balances = list(pool.map(balance, range(400)))
    assert balances == [w3.eth.get_balance(accounts[i % len(accounts)]) for i in range(400)]


def test_a_json_rpc_error_is_returned_not_failed_over(anvil_url: str) -> None:
    w3 = connect([anvil_url, _dead_url()])
    response = w3.provider.make_request("no_suchMethod", [])  # type: ignore[arg-type]
    assert "error" in response
    with pytest.raises(RuntimeError, match="no_suchMethod failed"):
        raw_call(w3, "no_suchMethod", [])


def test_a_proxied_url_goes_through_the_proxy(
    fake_proxy: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, seen = fake_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    w3 = connect(["http://rpc.example.invalid:8551/path"])
    assert raw_call(w3, "eth_blockNumber", []) == "0x2a"
    assert seen == ["http://rpc.example.invalid:8551/path"]  # the absolute form a proxy is sent


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        FailoverHTTPProvider(["ws://127.0.0.1:8545"])
    with pytest.raises(ValueError, match="at least one"):
        FailoverHTTPProvider([])
