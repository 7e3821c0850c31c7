"""Fixtures for every tier: a moto *server* (the same HTTP code path as AWS) and real rsync daemons.

One ThreadedMotoServer per test session (per xdist worker), reset before each test that uses it.
"""

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3
from moto.server import ThreadedMotoServer

from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.services import moto_subprocess
from tests.support import BUCKET


@pytest.fixture(scope="session", autouse=True)
def aws_credentials() -> None:
    """Dummy credentials before any client exists, so nothing can reach a real account."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
        }
    )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns real failures
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_process() -> Iterator[str]:
    """A moto server in a process of its own, for this test alone."""
    with moto_subprocess() as url:
        yield url


@pytest.fixture(scope="module")
def own_moto_server() -> Iterator[str]:
    """A moto server in a process of its own, shared by one module's tests: state that is slow to
    build (a synced mirror, a deployed stack) survives the other tests' resets of the session server."""
    with moto_subprocess() as url:
        yield url


@pytest.fixture
def endpoint(moto_server: str) -> str:
    """The moto server's URL, its state reset for this test."""
    urllib3.request("POST", f"{moto_server}/moto-api/reset")
    return moto_server


@pytest.fixture
def s3(endpoint: str) -> Any:
    """A boto3 S3 client on the fresh moto server, with the test bucket created."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def rsync_daemon() -> Iterator[Callable[[Path], RsyncDaemon]]:
    """Factory: start a real rsync daemon on 127.0.0.1 serving a directory; all stopped at teardown."""
    started: list[RsyncDaemon] = []

    def start(root: Path) -> RsyncDaemon:
        daemon = RsyncDaemon(root).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    root = tmp_path / "upstream"
    root.mkdir()
    return root
