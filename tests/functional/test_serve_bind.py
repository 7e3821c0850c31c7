"""An address a front end cannot listen on is the operator's ``--host`` or ``--port`` to fix: the real
CLI says so in one line and exits 2, never with a traceback."""

import socket
from pathlib import Path

import pytest

from tests.support import BUCKET, run_cli

COMMANDS = ("serve-http", "serve-ftp", "serve-rsync")
NOT_THIS_HOST = "203.0.113.1"  # TEST-NET-3: no host has it; binding it fails here, and nothing is ever sent to it


def refused(command: str, endpoint: str, host: str, port: int, scratch: Path) -> str:
    """stderr of ``command`` started on ``host``:``port``, which must exit 2 with one line and no traceback
    (serve-rsync also needs a replica directory: ``scratch``)."""
    replica = ["--replica-dir", str(scratch)] if command == "serve-rsync" else []
    result = run_cli([command, "--bucket", BUCKET, "--host", host, "--port", str(port), *replica], endpoint, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


@pytest.mark.usefixtures("s3")
@pytest.mark.parametrize("command", COMMANDS)
def test_a_port_in_use_is_one_line_naming_the_port(command: str, endpoint: str, tmp_path: Path) -> None:
    # GIVEN something already listening on the port
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        # WHEN the server is started on it THEN it says the port is in use, and which setting to change
        message = refused(command, endpoint, "127.0.0.1", port, tmp_path)
    assert f"--port {port}" in message and "already in use" in message, message


@pytest.mark.usefixtures("s3")
@pytest.mark.parametrize("command", COMMANDS)
def test_an_address_this_host_does_not_have_is_one_line_naming_the_host(
    command: str, endpoint: str, tmp_path: Path
) -> None:
    message = refused(command, endpoint, NOT_THIS_HOST, 2121, tmp_path)
    assert f"--host {NOT_THIS_HOST}" in message and "not an address of this host" in message, message
