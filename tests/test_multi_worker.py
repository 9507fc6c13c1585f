"""`essx run` with several API worker processes (ESSX_WORKERS): transfers authorised in any of them are
relayed exactly once by the one process that holds the background lease, and when that process is
killed another one takes the lease over and finishes the work."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from tests.polling import TRANSFER_STEPS, wait_until
from tests.service_process import PIN, ServiceProcess

pytestmark = pytest.mark.process  # runs `essx run` as a child process


def _user(svc: ServiceProcess, admin: dict[str, str], name: str, coins: str) -> tuple[dict[str, str], str]:
    _id, user, address = svc.user_with_wallet(f"{name}@example.com")
    svc.mint(admin, address, coins, key=f"fund-{name}")
    return user, address


def _transfer(svc: ServiceProcess, user: dict[str, str], to: str, amount: str) -> str:
    with httpx.Client(base_url=svc.base, headers=user, timeout=60) as c:
        r = c.post(
            "/api/v1/transfers",
            json={"to": to, "amount": amount},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 201, r.text
        tid = str(r.json()["id"])
        r = c.post(f"/api/v1/transfers/{tid}/authorize", json={"pin": PIN})
        assert r.status_code == 200, r.text
        return tid


def _burst(
    svc: ServiceProcess, users: list[dict[str, str]], to: str, *, each: int
) -> list[tuple[dict[str, str], str]]:
    """Every user sends ``each`` transfers of 1 coin, all users at once; returns (user, transfer id)."""
    ids: list[tuple[dict[str, str], str]] = []
    lock = threading.Lock()

    def send(user: dict[str, str]) -> None:
        for _ in range(each):
            tid = _transfer(svc, user, to, "1")
            with lock:
                ids.append((user, tid))

    threads = [threading.Thread(target=send, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids


def _background_holder(data_dir: Path) -> int:
    """The pid of the worker process holding the background lease (holder = host:pid:random)."""
    with sqlite3.connect(data_dir / "essx.db") as db:
        row = db.execute("SELECT holder FROM job_leases WHERE name = 'essx-background'").fetchone()
    assert row is not None and row[0], "nobody holds the background lease"
    return int(row[0].split(":")[1])


def _worker_pids(svc: ServiceProcess) -> set[int]:
    pids = set()
    for pid in svc.children():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:  # uvicorn's workers (not anvil, the simulators, the resource tracker)
            pids.add(pid)
    return pids


def _started(svc: ServiceProcess) -> int:
    """How many worker processes have finished their startup (replacements included)."""
    return svc.log.read_text().count("Application startup complete.")


def test_two_workers_relay_every_transfer_once_and_survive_the_leader_dying(tmp_path: Path) -> None:
    data = tmp_path / "data"
    svc = ServiceProcess(data, ESSX_WORKERS="2")
    try:
        svc.start()
        deadline = time.monotonic() + 30
        while len(_worker_pids(svc)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _worker_pids(svc)
        assert len(workers) == 2
        admin = {"Authorization": f"Bearer {svc.admin_token()}"}
        users = [_user(svc, admin, f"u{i}", "10") for i in range(4)]
        sink = Account.create().address

        # Many requests at once on fresh connections: the kernel spreads them over both workers.
        ids = _burst(svc, [u for u, _ in users], sink, each=3)
        assert len(ids) == 12
        for user, tid in ids:
            body = svc.final_transfer(user, tid)
            assert body["status"] == "confirmed", body
            assert [s["kind"] for s in body["steps"]] == TRANSFER_STEPS  # type: ignore[index, union-attr]
        assert svc.balance(sink) == "12"
        assert all(svc.balance(address) == "7" for _, address in users)

        # Kill the process that runs the relayer and the batcher, without any chance to clean up, while
        # uvicorn's parent waits for its health-check answer (stopped first, it cannot answer): the parent
        # notices the death at once and starts a replacement (it used to wait its whole 60 s health-check
        # timeout, serving with one process, or none after a second death, and deaf to Ctrl-C).
        leader = _background_holder(data)
        assert leader in workers
        os.kill(leader, signal.SIGSTOP)
        time.sleep(3)  # the parent asks each worker every 0.5 s: it is waiting for this one's answer by now
        os.kill(leader, signal.SIGKILL)
        replaced = wait_until(lambda: _worker_pids(svc) - workers, timeout=20)
        assert replaced, f"no replacement for the killed worker: {_worker_pids(svc)}"
        user, address = users[0]
        tid = _transfer(svc, user, sink, "2")  # served by the surviving worker (or its restarted sibling)
        body = svc.final_transfer(user, tid, timeout=90)
        assert body["status"] == "confirmed", body
        assert [s["kind"] for s in body["steps"]] == TRANSFER_STEPS  # type: ignore[index, union-attr]
        assert _background_holder(data) != leader
        assert svc.balance(sink) == "14" and svc.balance(address) == "5"
        # a mint answered by a follower waits for the leader's relayer (it never steps it itself)
        r = httpx.post(
            f"{svc.base}/api/v1/admin/coin/mint",
            json={"to": address, "amount": "1"},
            headers={**admin, "Idempotency-Key": "after-takeover"},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
        time.sleep(2)  # more blocks and relayer passes: still paid once
        assert svc.balance(sink) == "14" and svc.balance(address) == "6"

        # Kill the leader again, this time with work in flight: transfers just authorised, their batch
        # about to be signed, sent or mined. The next leader finishes each of them exactly once. First the
        # replacement must be serving: otherwise this would kill the only process serving (a loaded machine
        # takes many seconds to start one).
        assert wait_until(lambda: _started(svc) >= 3, timeout=120), svc.log.read_text()[-3000:]
        leader = _background_holder(data)
        burst = _burst(svc, [u for u, _ in users], sink, each=1)
        with sqlite3.connect(data / "essx.db") as db:
            marks = ",".join("?" * len(burst))
            states = [
                r[0]
                for r in db.execute(
                    f"SELECT status FROM transfers WHERE id IN ({marks})", [t for _, t in burst]
                )
            ]
        os.kill(leader, signal.SIGKILL)
        assert len(states) == 4 and any(s != "confirmed" for s in states), states  # work was in flight
        for user, tid in burst:
            body = svc.final_transfer(user, tid, timeout=90)
            assert body["status"] == "confirmed", body
            assert [s["kind"] for s in body["steps"]] == TRANSFER_STEPS  # type: ignore[index, union-attr]
        assert _background_holder(data) != leader
        time.sleep(2)
        assert svc.balance(sink) == "18"
        assert [svc.balance(a) for _, a in users] == ["5", "6", "6", "6"]
    finally:
        svc.stop()
