"""Faults and kills: the served mirror stays consistent, errors say what happened, the next run converges."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import write_file
from tests.faultproxy import every_nth, fault_proxy
from tests.functional.test_sync import etags, mirror_files, sync
from tests.support import BUCKET, cli_env, tree_files

DaemonFactory = Callable[[Path], RsyncDaemon]
LATE = {"repodata/repomd.xml", "dists/stable/Packages", "dists/stable/Release"}


def write_version(root: Path, version: int) -> None:
    """v1 → v2: data changes and additions, every index file changes, two old files go away."""
    for n in range(20):
        changed = version == 2 and n < 5
        write_file(
            root / f"pool/a{n:02d}.rpm",
            f"a{n} {'v2' if changed else 'v1'}".encode() * 200,
            1_700_000_000 + n + (5000 if changed else 0),
        )
    if version == 2:
        for n in range(10):
            write_file(root / f"pool/b{n:02d}.rpm", f"b{n} v2".encode() * 200, 1_710_000_000 + n)
        for n in range(2):
            (root / f"old/x{n}").unlink()
    else:
        for n in range(10):
            write_file(root / f"old/x{n}", f"x{n} v1".encode(), 1_690_000_000)
    for rel in LATE:
        write_file(root / rel, f"index v{version}".encode(), 1_700_000_000 + version * 10_000)


def check_invariants(s3: Any, v1: dict[str, bytes], v2: dict[str, bytes]) -> None:
    served = mirror_files(s3)
    for key, body in served.items():
        assert body in (v1.get(key), v2.get(key)), f"{key} holds content of neither version"
    new_data = {k for k in v2 if k not in LATE and v1.get(k) != v2[k]}
    late_new = [k for k in LATE if served.get(k) == v2[k]]
    if late_new:
        missing = sorted(k for k in new_data if served.get(k) != v2[k])
        assert not missing, f"index files {late_new} published before the data {missing[:5]}"
    gone = [k for k in set(v1) - set(v2) if k not in served]
    if gone:
        unpublished = sorted(k for k in v2 if served.get(k) != v2[k])
        assert not unpublished, f"deleted {gone} before publishing {unpublished[:5]}"


def contents(root: Path) -> dict[str, bytes]:
    return {k: v[0] for k, v in tree_files(root).items()}


@dataclass
class Moved:
    """A published v1 and an upstream that has since moved to v2."""

    daemon: RsyncDaemon
    v1: dict[str, bytes]
    v2: dict[str, bytes]


@pytest.fixture
def moved(upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str) -> Moved:
    write_version(upstream, 1)
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint)[0] == 0
    v1 = contents(upstream)
    write_version(upstream, 2)
    return Moved(daemon, v1, contents(upstream))


def start_sync(daemon: RsyncDaemon, endpoint: str, *extra: str, **popen: Any) -> "subprocess.Popen[str]":
    """A sync as a background process logging JSON to a pipe on stderr."""
    args = ["sync", "--upstream", daemon.url, "--bucket", BUCKET, "--log-format", "json", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "mirrorkeeper", *args], env=cli_env(endpoint), stderr=subprocess.PIPE, text=True, **popen
    )


def run_until_phase_then_kill(daemon: RsyncDaemon, endpoint: str, phase: str) -> bool:
    """Start a sync, SIGKILL its whole process group the moment it logs ``phase``. True if it was killed."""
    process = start_sync(
        daemon,
        endpoint,
        "--lock-ttl",
        "1",
        "--upload-concurrency",
        "2",
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("{") and json.loads(line).get("phase") == phase:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
    return process.wait() == -signal.SIGKILL


@pytest.mark.parametrize("phase", ["data", "late-1", "late-2", "links", "index", "delete", "manifest", "trace"])
def test_killed_at_any_phase_keeps_the_mirror_consistent_and_the_next_run_converges(
    phase: str, moved: Moved, s3: Any, endpoint: str
) -> None:
    # GIVEN a published v1 and an upstream that moved to v2
    daemon, v1, v2 = moved.daemon, moved.v1, moved.v2
    # WHEN the sync is killed as it enters the phase
    assert run_until_phase_then_kill(daemon, endpoint, phase)
    # THEN clients see a consistent tree
    check_invariants(s3, v1, v2)
    # AND the next run (once the dead run's lease expires) publishes v2 exactly; S3 judges expiry by
    # LastModified and Date, both in whole seconds, so a 1 s lease can take 2 s to expire
    time.sleep(2.1)
    code, _, stderr = sync(daemon, endpoint)
    assert code == 0, stderr
    assert mirror_files(s3) == v2
    assert sync(daemon, endpoint)[1]["result"] == "no-change"


def test_upstream_stopped_mid_run_exits_1_and_leaves_the_served_tree_intact(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    write_version(upstream, 1)
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint)[0] == 0
    v1 = contents(upstream)
    manifest_before = etags(s3, "state/manifest")
    write_version(upstream, 2)
    process = start_sync(daemon, endpoint, "--staging-bytes", "8K", stdout=subprocess.PIPE)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if '"phase": "data"' in line:
            daemon.stop()
    code = process.wait()
    assert code == 1, "".join(lines)
    assert lines[-1].startswith("mirrorkeeper sync: error: fetching from") and "next run retries" in lines[-1]
    check_invariants(s3, v1, contents(upstream))
    assert etags(s3, "state/manifest") == manifest_before
    assert all(mirror_files(s3)[k] == v1[k] for k in LATE)
    assert all(f"old/x{n}" in mirror_files(s3) for n in range(10))
    restarted = RsyncDaemon(upstream, port=daemon.port).start()
    try:
        assert sync(restarted, endpoint)[0] == 0
        assert mirror_files(s3) == contents(upstream)
    finally:
        restarted.stop()


def test_an_upstream_that_stops_answering_fails_within_rsync_timeout_and_keeps_the_served_tree(
    moved: Moved, s3: Any, endpoint: str
) -> None:
    started = time.monotonic()
    with moved.daemon.hung():
        code, _, stderr = sync(moved.daemon, endpoint, "--rsync-timeout", "2")
    assert code == 1 and time.monotonic() - started < 20
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("mirrorkeeper sync: error: listing rsync://") and "stalled" in last_line
    assert "raise --rsync-timeout" in last_line
    assert mirror_files(s3) == moved.v1
    assert sync(moved.daemon, endpoint)[0] == 0
    assert mirror_files(s3) == moved.v2


def test_throttling_and_5xx_are_retried_until_the_sync_succeeds(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    write_version(upstream, 1)
    daemon = rsync_daemon(upstream)
    with fault_proxy(endpoint, every_nth(6)) as proxy:
        code, _, stderr = sync(daemon, str(proxy["url"]))
    assert code == 0, stderr
    assert int(str(proxy["faults"])) > 5
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read())
    assert report["s3_requests"] > sum(report["s3_requests_by_operation"].values())  # retries are counted
    assert mirror_files(s3) == contents(upstream)


def test_an_object_s3_keeps_refusing_is_skipped_and_everything_else_is_published(
    moved: Moved, s3: Any, endpoint: str
) -> None:
    daemon, v1, v2 = moved.daemon, moved.v1, moved.v2

    def fail_index_uploads(method: str, path: str, number: int) -> tuple[int, str] | None:
        return (500, "InternalError") if method == "PUT" and "Release" in path else None

    # WHEN S3 keeps refusing one index file, after every retry
    with fault_proxy(endpoint, fail_index_uploads) as proxy:
        code, _, stderr = sync(daemon, str(proxy["url"]), "--s3-max-attempts", "2")
    # THEN the run publishes everything else, keeps that file's published copy and says so: exit 5
    assert code == 5, stderr
    last = stderr.strip().splitlines()[-1]
    assert "dists/stable/Release" in last and "skipped" in last and "next run retries" in last
    served = mirror_files(s3)
    assert served["dists/stable/Release"] == v1["dists/stable/Release"]
    assert all(served[k] == v2[k] for k in v2 if k != "dists/stable/Release")
    # AND the index it could not replace still names what it named: that tree loses nothing this run
    check_invariants(s3, v1, v2)
    assert all(f"old/x{n}" in served for n in range(2))
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read())
    assert report["result"] == "partial" and report["exit_code"] == 5
    assert [f["path"] for f in report["failed"]] == ["dists/stable/Release"]
    assert "InternalError" in report["failed"][0]["reason"] and report["held_deletions"] == 2
    # AND the next run, with S3 well again, converges
    assert sync(daemon, endpoint)[0] == 0
    assert mirror_files(s3) == v2


def test_full_staging_disk_exits_1_with_advice_and_serves_the_old_tree(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tiny_disk: Path
) -> None:
    write_version(upstream, 1)
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint)[0] == 0
    v1 = contents(upstream)
    write_file(upstream / "pool/huge.iso", os.urandom(1024 * 1024), 1_720_000_000)
    code, _, stderr = sync(daemon, endpoint, "--staging-dir", str(tiny_disk))
    assert code == 1
    assert "ran out of space" in stderr and "--staging-bytes" in stderr
    assert mirror_files(s3) == v1
    assert sync(daemon, endpoint)[0] == 0
    assert mirror_files(s3) == contents(upstream)


def test_a_tree_larger_than_the_staging_disk_still_syncs(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tiny_disk: Path
) -> None:
    # GIVEN 1.5 MiB of upstream files and a 256 KiB staging disk
    for n in range(48):
        write_file(upstream / f"pool/p{n:02d}.bin", os.urandom(32 * 1024), 1_700_000_000 + n)
    # WHEN synced with a staging budget that fits the disk
    code, summary, stderr = sync(
        rsync_daemon(upstream), endpoint, "--staging-dir", str(tiny_disk), "--staging-bytes", "192K"
    )
    # THEN every file arrives, in batches that never overflowed the disk
    assert code == 0, stderr
    assert summary["uploaded_files"] == 48
    assert mirror_files(s3) == contents(upstream)


def test_sigterm_mid_run_releases_the_lease_and_records_why(moved: Moved, s3: Any, endpoint: str) -> None:
    # GIVEN a published v1 and an upstream that moved to v2
    daemon, v1, v2 = moved.daemon, moved.v1, moved.v2
    # WHEN ECS stops the task (SIGTERM) as it starts uploading data
    process = start_sync(daemon, endpoint, "--upload-concurrency", "2", stdout=subprocess.DEVNULL)
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("{") and json.loads(line).get("phase") == "data":
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stderr.read()
    # THEN it exits 130 with one line, the lease is gone at once and the report says why
    assert process.wait(30) == 130, rest
    assert "interrupted" in rest.strip().splitlines()[-1]
    assert "state/lock.json" not in etags(s3, "state/")
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read())
    assert report["result"] == "failed" and report["exit_code"] == 130 and "signal" in report["error"]
    # AND clients still see a consistent tree; the next run, with no lease to wait for, finishes the job
    check_invariants(s3, v1, v2)
    code, _, stderr = sync(daemon, endpoint)
    assert code == 0, stderr
    assert mirror_files(s3) == v2
