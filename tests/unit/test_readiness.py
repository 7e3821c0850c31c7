"""serve-rsync's health check server (mirrorkeeper.serve.readiness) on a loopback port, asked by a
real HTTP client: the status and body for each state, and a silent connection closed."""

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mirrorkeeper.serve.readiness import Readiness, ReadinessHandler, ReadinessServer


@contextmanager
def answering(state: list[Readiness]) -> Iterator[int]:
    server = ReadinessServer(("127.0.0.1", 0), lambda: state[0])
    server.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def ask(port: int, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/anything", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_it_answers_200_only_when_every_module_is_served_and_the_daemon_runs() -> None:
    state = [Readiness({"openvz": True, "linux-debian": False}, daemon_running=True)]
    with answering(state) as port:
        status, body = ask(port)
        assert status == 503
        assert json.loads(body) == {
            "daemon": "running",
            "modules": {"linux-debian": "initialising", "openvz": "serving"},
            "ready": False,
        }
        state[0] = Readiness({"openvz": True, "linux-debian": True}, daemon_running=True)
        assert ask(port)[0] == 200
        assert ask(port, "HEAD") == (200, b"")  # a HEAD has the status and no body
        state[0] = Readiness({"openvz": True, "linux-debian": True}, daemon_running=False)
        status, body = ask(port)
        assert status == 503 and json.loads(body)["daemon"] == "stopped"


def test_a_connection_that_sends_nothing_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ReadinessHandler.timeout is not None and 0 < ReadinessHandler.timeout <= 10
    monkeypatch.setattr(ReadinessHandler, "timeout", 0.3)  # the same, sooner
    with answering([Readiness({}, daemon_running=True)]) as port, socket.create_connection(("127.0.0.1", port)) as idle:
        idle.settimeout(5)  # long past the handler's: a server that keeps it open fails here
        assert idle.recv(1) == b""
