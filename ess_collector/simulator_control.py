"""A small HTTP control endpoint for a running simulator, so faults can be switched from outside:

    GET  /sites                                  every site: index, port, serial, time, faults
    POST /sites/{index}/faults/{name}?enabled=1&delay_s=5&polls=3
    POST /sites/{index}/faults/clear

Binds to 127.0.0.1 by default: it is a development tool with no authentication.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from .simulator import FAULTS, ThreadedCluster


class ControlServer:
    def __init__(self, cluster: ThreadedCluster, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cluster = cluster
        handler = type("Handler", (_Handler,), {"cluster": cluster})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sim-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def site_states(cluster: ThreadedCluster) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "port": port,
            "serial": sim.info.serial,
            "time": sim.time.isoformat(),
            "faults": sim.fault_state(),
        }
        for i, (sim, port) in enumerate(zip(cluster.sims, cluster.ports, strict=True))
    ]


class _Handler(BaseHTTPRequestHandler):
    cluster: ThreadedCluster

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the simulator logs its own way
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if urlparse(self.path).path.rstrip("/") == "/sites":
            self._reply(200, site_states(self.cluster))
        else:
            self._reply(404, {"error": "NotFound", "detail": "GET /sites"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "sites" or parts[2] != "faults" or not parts[1].isdigit():
            self._reply(404, {"error": "NotFound", "detail": "POST /sites/{index}/faults/{name}"})
            return
        index, name = int(parts[1]), parts[3]
        if index >= len(self.cluster.sims):
            self._reply(404, {"error": "NotFound", "detail": f"no site {index}"})
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if name == "clear":
                self.cluster.sims[index].clear_faults()
                self.cluster.set_fault(index, "offline", False)
            else:
                if name not in FAULTS:
                    raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
                enabled = query.get("enabled", "1").lower() not in ("0", "false", "off", "no")
                params = {"delay_s": float(query.get("delay_s", 5.0)), "polls": int(query.get("polls", 3))}
                self.cluster.set_fault(index, name, enabled, **params)
        except ValueError as exc:
            self._reply(400, {"error": "BadRequest", "detail": str(exc)})
            return
        self._reply(200, site_states(self.cluster)[index])
