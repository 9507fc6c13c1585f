"""The simulator's Modbus TCP responder at the byte level: exception codes, split and pipelined frames."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ess_collector.simulator import SimulatorCluster, ThreadedCluster
from ess_collector.sunspec import BASE, MAP_LEN, MODELS

START = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)


@pytest.fixture
def site() -> Iterator[tuple[ThreadedCluster, socket.socket]]:
    with (
        ThreadedCluster(SimulatorCluster(1, seed=3, start=START, speed=0)) as running,
        socket.create_connection(("127.0.0.1", running.ports[0]), timeout=2) as sock,
    ):
        yield running, sock


def request(tid: int, function: int, address: int, count: int, unit: int = 1) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, function, address, count)


def receive(sock: socket.socket) -> tuple[int, int, bytes]:
    head = sock.recv(7, socket.MSG_WAITALL)
    tid, _, length, _ = struct.unpack(">HHHB", head)
    return tid, length, sock.recv(length - 1, socket.MSG_WAITALL)


@pytest.mark.parametrize(
    ("function", "address", "count", "unit", "code"),
    [
        (4, BASE, 10, 1, 1),  # input registers: not on this device
        (3, BASE - 1, 2, 1, 2),  # below the map
        (3, BASE + MAP_LEN - 1, 2, 1, 2),  # runs past the end model
        (3, BASE, 126, 1, 3),  # more than 125 registers
        (3, BASE, 0, 1, 3),
        (3, BASE, 2, 2, 0x0B),  # another device id
    ],
)
def test_exceptions(site: tuple[ThreadedCluster, socket.socket], function: int, address: int, count: int, unit: int, code: int) -> None:  # fmt: skip
    _, sock = site
    sock.sendall(request(9, function, address, count, unit))
    assert receive(sock) == (9, 3, bytes([function | 0x80, code]))


def test_busy_is_exception_6(site: tuple[ThreadedCluster, socket.socket]) -> None:
    cluster, sock = site
    cluster.set_fault(0, "busy")
    sock.sendall(request(1, 3, BASE, 2))
    assert receive(sock) == (1, 3, bytes([0x83, 6]))


def test_split_and_pipelined_frames_are_answered_in_order(
    site: tuple[ThreadedCluster, socket.socket],
) -> None:
    cluster, sock = site
    frames = request(1, 3, BASE, 2) + request(2, 3, BASE + 335, 2) + request(3, 3, BASE + 2, 125)
    sock.sendall(frames[:5])
    sock.sendall(frames[5:17])  # the first frame completes inside the second packet
    sock.sendall(frames[17:])
    image = cluster.sims[0]._image
    for tid, address, count in ((1, 0, 2), (2, 335, 2), (3, 2, 125)):
        got_tid, length, pdu = receive(sock)
        assert (got_tid, length, pdu[:2]) == (tid, 3 + 2 * count, bytes([3, 2 * count]))
        assert list(struct.unpack(f">{count}H", pdu[2:])) == image[address : address + count]


def test_garbage_closes_the_connection(site: tuple[ThreadedCluster, socket.socket]) -> None:
    _, sock = site
    sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert sock.recv(10) == b""


def write_request(tid: int, address: int, values: list[int], *, nbytes: int | None = None) -> bytes:
    body = struct.pack(
        f">BHHB{len(values)}H",
        16,
        address,
        len(values),
        2 * len(values) if nbytes is None else nbytes,
        *values,
    )
    return struct.pack(">HHHB", tid, 0, len(body) + 1, 1) + body


MODE = MODELS[124]["StorCtl_Mod"].address


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (write_request(4, MODE, [1], nbytes=4), 3),  # byte count does not match the count
        (write_request(4, MODE, []), 3),  # no registers
        (write_request(4, BASE + MAP_LEN - 1, [0, 0]), 2),  # runs past the end of the map
        (write_request(4, MODELS[124]["ChaState"].address, [0]), 2),  # read-only
        (write_request(4, MODE, [8]), 3),  # a bit StorCtl_Mod does not have
    ],
)
def test_write_exceptions(site: tuple[ThreadedCluster, socket.socket], frame: bytes, code: int) -> None:
    cluster, sock = site
    sock.sendall(frame)
    assert receive(sock) == (4, 3, bytes([0x90, code]))
    assert cluster.sims[0].controls == cluster.sims[0].default_controls()


def test_writes_are_echoed_and_read_back(site: tuple[ThreadedCluster, socket.socket]) -> None:
    cluster, sock = site
    sock.sendall(write_request(5, MODE, [2]))
    assert receive(sock) == (5, 6, struct.pack(">BHH", 16, MODE, 1))
    rte = MODELS[124]["OutWRte"].address
    sock.sendall(struct.pack(">HHHBBHH", 6, 0, 6, 1, 6, rte, (-2500) & 0xFFFF))  # function 6: one register
    assert receive(sock) == (6, 6, struct.pack(">BHH", 6, rte, (-2500) & 0xFFFF))
    sock.sendall(request(7, 3, MODE, rte - MODE + 1))
    _, _, pdu = receive(sock)
    regs = struct.unpack(f">{rte - MODE + 1}H", pdu[2:])
    assert (regs[0], regs[-1]) == (2, (-2500) & 0xFFFF)
    sim = cluster.sims[0]
    floor = -(sim.config.max_charge_w * 2500 // 10_000)  # told to charge at least 25 % of WChaMax...
    assert sim.battery_w == min(sim.load_w - sim.pv_w, floor) < 0  # ...and still absorbs the PV surplus


def test_busy_and_refusing_devices_refuse_writes(site: tuple[ThreadedCluster, socket.socket]) -> None:
    cluster, sock = site
    cluster.set_fault(0, "busy")
    sock.sendall(write_request(1, MODE, [1]))
    assert receive(sock) == (1, 3, bytes([0x90, 6]))
    cluster.set_fault(0, "busy", False)
    cluster.set_fault(0, "control_refused")
    sock.sendall(write_request(2, MODE, [1]))
    assert receive(sock) == (2, 3, bytes([0x90, 4]))
    sock.sendall(request(3, 3, BASE, 2))  # reads still work
    assert receive(sock)[2][:2] == bytes([3, 4])
