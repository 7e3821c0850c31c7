"""Fixtures the functional tests of more than one module share."""

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import add_hostile_names, write_file
from tests.support import BUCKET, run_cli


@pytest.fixture
def hostile_mirror(upstream: Path, rsync_daemon: Callable[[Path], RsyncDaemon], s3: Any, endpoint: str) -> Path:
    """The hostile-name tree with an empty directory and symlinks, synced by the real CLI into the
    test bucket; returns the upstream directory, to compare what a front end serves against."""
    add_hostile_names(upstream)
    (upstream / "empty dir").mkdir()
    write_file(upstream / "v1/pkg.rpm", b"rpm bytes", 1_600_000_000)
    os.symlink("v1", upstream / "current")
    os.symlink("v1/pkg.rpm", upstream / "latest.rpm")
    result = run_cli(["sync", "--upstream", rsync_daemon(upstream).url, "--bucket", BUCKET], endpoint)
    assert result.returncode == 0, result.stderr
    return upstream


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A 256 KiB tmpfs: a disk that fills up (mounting it needs root, as CI has)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    assert result.returncode == 0, f"this test mounts a tmpfs and needs root: {result.stderr!r}"
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)
