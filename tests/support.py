"""Test helpers shared by every tier: run the real CLI, read back what S3 holds."""

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mirrorkeeper_dev.rsyncd import free_port
from mirrorkeeper_dev.services import serving

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


def is_ours(key: str, host_name: str = BUCKET) -> bool:
    """Whether a served key (relative to pub/) is one of the sync's own files, not upstream's: under
    .mirrorkeeper/, or the ftpsync trace project/trace/<host name> (the host's name: the bucket's by
    default)."""
    return key.startswith(".mirrorkeeper/") or key == f"project/trace/{host_name}"


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


def tree_shape(root: Path) -> dict[str, str]:
    """Every entry under ``root`` by relative path: 'dir', 'file', or a symlink's target."""
    shape = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        shape[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir() else "file"
    return shape


# Where a server listening on an unspecified address is reached for the readiness check.
_REACHED_AT = {"::": "::1", "0.0.0.0": "127.0.0.1"}


@contextmanager
def serve_cli(command: str, endpoint: str, *extra: str, host: str = "127.0.0.1") -> Iterator[int]:
    """``mirrorkeeper COMMAND --bucket BUCKET --host HOST --port P EXTRA...`` as a real subprocess
    against the moto server; yields P once it accepts connections, stops the server afterwards."""
    port = free_port()
    args = [sys.executable, "-m", "mirrorkeeper", command, "--bucket", BUCKET, "--host", host, "--port", str(port)]
    with serving([*args, *extra], port, cli_env(endpoint), command, host=_REACHED_AT.get(host, host)):
        yield port


@contextmanager
def serve_rsync(endpoint: str, replica: Path, *extra: str) -> Iterator["subprocess.Popen[bytes]"]:
    """``mirrorkeeper serve-rsync`` on a free port, polling fast; yields the process (its port in
    ``.port``) once the daemon listens: its module may still be initialising (:func:`served`)."""
    replica.mkdir(exist_ok=True)
    port = free_port()
    args = [
        sys.executable, "-m", "mirrorkeeper", "serve-rsync", "--bucket", BUCKET, "--replica-dir", str(replica),
        "--port", str(port), "--poll-interval", "0.2", *extra,
    ]  # fmt: skip
    with serving(args, port, cli_env(endpoint), "serve-rsync") as process:
        process.port = port  # type: ignore[attr-defined]
        yield process


def pull(port: int, into: Path, *options: str, module: str = "mirror") -> subprocess.CompletedProcess[str]:
    """A real client: ``rsync -a --delete rsync://127.0.0.1:PORT/MODULE/ INTO``."""
    return subprocess.run(
        ["rsync", "-a", "--delete", *options, f"rsync://127.0.0.1:{port}/{module}/", f"{into}/"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def served(port: int, scratch: Path) -> bool:
    """True once the module answers transfers (its first build is complete)."""
    return pull(port, scratch, "--dirs", "--exclude=*").returncode == 0


def free_port_range(count: int) -> tuple[int, int]:
    """FIRST, LAST of ``count`` consecutive ports free on 127.0.0.1 now, below the kernel's ephemeral range
    (which starts at 32768 unless configured otherwise), so that no other process's port-0 bind can take
    one of them before the test uses them."""
    for _ in range(200):
        first = random.randrange(10_000, 32_000 - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first, first + count - 1
    raise RuntimeError(f"no {count} consecutive free ports found between 10000 and 32000")
