"""Test helpers shared by every tier: run the real CLI, read back what S3 holds."""

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BUCKET = "mirror-test"


def cli_env(endpoint: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRRORKEEPER_")}
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
        }
    )
    env.update(extra or {})
    return env


def run_cli(
    args: list[str], endpoint: str, extra_env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``mirrorkeeper ARGS`` as a real subprocess against the moto server at ``endpoint``."""
    return subprocess.run(
        [sys.executable, "-m", "mirrorkeeper", *args],
        env=cli_env(endpoint, extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def served_objects(s3: Any, bucket: str = BUCKET, prefix: str = "pub/") -> dict[str, dict[str, Any]]:
    """Every object under the served prefix: relative key → {body, metadata, content_type}."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            obj = s3.get_object(Bucket=bucket, Key=item["Key"])
            out[item["Key"][len(prefix) :]] = {
                "body": obj["Body"].read(),
                "metadata": obj.get("Metadata", {}),
                "content_type": obj.get("ContentType", ""),
            }
    return out


def tree_files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Regular files under ``root`` (symlinks not followed): relative path → (content, mtime)."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = (path.read_bytes(), int(path.stat().st_mtime))
    return out


class CliServer:
    """``mirrorkeeper COMMAND --bucket BUCKET --port P EXTRA...`` as a real subprocess against the moto server;
    ``with CliServer(...) as port`` waits until P accepts connections and stops the server afterwards."""

    def __init__(self, command: str, endpoint: str, *extra: str) -> None:
        from mirrorkeeper.rsyncd import free_port

        self.command = command
        self.port = free_port()
        self.args = [sys.executable, "-m", "mirrorkeeper", command, "--bucket", BUCKET, "--port", str(self.port)]
        self.args += extra
        self.env = cli_env(endpoint)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> int:
        import socket
        import time

        self.process = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self.port
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise AssertionError(f"{self.command} did not start: {self._stderr()}") from None
                time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def _stderr(self) -> str:
        assert self.process is not None and self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")


serve_cli = CliServer  # the name the front-end tests use: `with serve_cli("serve-http", endpoint) as port:`
