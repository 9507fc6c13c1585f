"""The simulator's HTTP fault switch (what `essx sim-fault` talks to)."""

from __future__ import annotations

import httpx

from ess_collector.simulator import SimulatorCluster, ThreadedCluster
from ess_collector.simulator_control import ControlServer
from tests.ess_collector.harness import START


def test_faults_are_switched_over_http() -> None:
    with ThreadedCluster(SimulatorCluster(2, start=START, speed=0)) as cluster:
        control = ControlServer(cluster).start()
        base = f"http://127.0.0.1:{control.port}"
        try:
            sites = httpx.get(f"{base}/sites").json()
            assert [s["port"] for s in sites] == cluster.ports
            r = httpx.post(f"{base}/sites/1/faults/slow", params={"delay_s": "0.5"})
            assert r.status_code == 200 and r.json()["faults"]["slow_s"] == 0.5
            httpx.post(f"{base}/sites/1/faults/offline")
            assert cluster.sims[1].faults.offline and cluster.cluster.servers[1]._server is None
            httpx.post(f"{base}/sites/1/faults/clear")
            assert not cluster.sims[1].faults.offline and cluster.sims[1].faults.slow_s == 0
            assert cluster.cluster.servers[1]._server is not None  # the port listens again
            off = httpx.post(f"{base}/sites/0/faults/inverter_fault", params={"enabled": "0"})
            assert off.json()["faults"]["inverter_fault"] is False
            assert httpx.post(f"{base}/sites/0/faults/bogus").status_code == 400
            assert httpx.post(f"{base}/sites/9/faults/busy").status_code == 404
        finally:
            control.stop()
