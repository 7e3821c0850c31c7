"""serve-rsync's health check: the port a load balancer asks whether to send clients to this task.

A TCP check of the rsync port cannot tell: the daemon listens from the start and answers
'initialising' until the replica is built. This port answers ``200`` once every module serves a
complete replica and the daemon runs, ``503`` before that and after the daemon died, with a JSON
body naming each module's state, for GET and HEAD on any path (docs/rsync.md, "Health check").
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mirrorkeeper.sockets import DualStackHTTPServer, NamedRequestHandler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    """Each module's state (True: its complete replica is served) and whether the daemon runs."""

    modules: Mapping[str, bool]
    daemon_running: bool

    @property
    def ready(self) -> bool:
        return self.daemon_running and all(self.modules.values())

    def as_json(self) -> bytes:
        body = {
            "ready": self.ready,
            "daemon": "running" if self.daemon_running else "stopped",
            "modules": {name: "serving" if ready else "initialising" for name, ready in self.modules.items()},
        }
        return json.dumps(body, sort_keys=True).encode() + b"\n"


class ReadinessServer(DualStackHTTPServer):
    """Answers every request from ``look()``, asked afresh each time."""

    def __init__(self, address: tuple[str, int], look: Callable[[], Readiness]) -> None:
        self.look = look
        super().__init__(address, ReadinessHandler)

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="health-check", daemon=True).start()


class ReadinessHandler(NamedRequestHandler):
    server: ReadinessServer
    # The port is as public as the rsync port: a connection that sends nothing is closed, not kept.
    timeout = 5.0

    def do_GET(self) -> None:  # noqa: N802 - http.server dispatches by this name
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        readiness = self.server.look()
        payload = readiness.as_json()
        self.send_response(200 if readiness.ready else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # A load balancer asks every few seconds from each of its nodes: not worth a line each.
        log.debug("health check: " + format, *args)
