"""Nothing one path does can stop the mirror: real rsync daemon (files it may not read), moto server,
the real CLI. Each test shows what the run published, its exit code and line, and what the next
run did."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mirrorkeeper_dev.sampletree import write_file
from tests.functional.test_sync import DaemonFactory, mirror_files, sync
from tests.support import BUCKET, cli_env, tree_files


def report(s3: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read())
    return body


def readable(root: Path) -> dict[str, bytes]:
    return {k: v[0] for k, v in tree_files(root).items() if os.access(root / k, os.R_OK)}


def test_a_first_sync_skips_what_upstream_will_not_send_and_publishes_the_rest(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN an upstream with an unreadable file and an unreadable directory (the daemon runs as nobody)
    for n in range(5):
        write_file(upstream / f"pool/p{n}.rpm", f"p{n}".encode(), 1_700_000_000)
    write_file(upstream / "pool/secret.rpm", b"secret", 1_700_000_000)
    write_file(upstream / "locked/inside.rpm", b"inside", 1_700_000_000)
    os.chmod(upstream / "pool/secret.rpm", 0)
    os.chmod(upstream / "locked", 0)
    daemon = rsync_daemon(upstream)
    try:
        # WHEN the first sync runs (rsync exits 23 for both)
        code, summary, stderr = sync(daemon, endpoint)
        # THEN it is not refused by the deletion guard: it publishes what it got, and says "partial"
        assert code == 5, stderr
        assert "2 paths were skipped" in stderr.strip().splitlines()[-1]
        assert mirror_files(s3) == {f"pool/p{n}.rpm": f"p{n}".encode() for n in range(5)}
        failed = {f["path"]: f["reason"] for f in report(s3)["failed"]}
        assert set(failed) == {"pool/secret.rpm", "locked"}
        assert all("Permission denied" in reason for reason in failed.values())
        assert summary["failed_total"] == 2 and report(s3)["result"] == "partial"
    finally:
        os.chmod(upstream / "pool/secret.rpm", 0o644)
        os.chmod(upstream / "locked", 0o755)
    # AND the next run, upstream fixed, fetches them
    code, _, stderr = sync(daemon, endpoint)
    assert code == 0, stderr
    assert mirror_files(s3) == readable(upstream)


def test_a_directory_upstream_stops_showing_keeps_its_published_files(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN a published mirror with a directory of 200 files (most of the mirror)
    for n in range(200):
        write_file(upstream / f"big/f{n:03d}", b"x", 1_700_000_000)
    write_file(upstream / "other/a", b"a", 1_700_000_000)
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint)[0] == 0
    # WHEN that directory becomes unreadable upstream, and another file changes
    os.chmod(upstream / "big", 0)
    write_file(upstream / "other/a", b"a2", 1_700_000_100)
    try:
        code, _, stderr = sync(daemon, endpoint)
    finally:
        os.chmod(upstream / "big", 0o755)
    # THEN nothing under it is deleted (it is unknown this run, not gone), the change is published,
    # and the run says which directory it could not read
    assert code == 5, stderr
    served = mirror_files(s3)
    assert len([k for k in served if k.startswith("big/")]) == 200 and served["other/a"] == b"a2"
    assert [f["path"] for f in report(s3)["failed"]] == ["big"]
    assert report(s3)["held_deletions"] == 0
    assert sync(daemon, endpoint)[0] == 0


def test_a_path_failing_three_runs_in_a_row_is_quarantined_then_retried_daily(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    write_file(upstream / "good", b"good", 1_700_000_000)
    write_file(upstream / "bad.iso", b"bad", 1_700_000_000)
    os.chmod(upstream / "bad.iso", 0)
    daemon = rsync_daemon(upstream)
    try:
        # WHEN the same file fails three runs in a row
        for run in (1, 2, 3):
            code, _, stderr = sync(daemon, endpoint)
            assert code == 5, stderr
            assert report(s3)["newly_quarantined"] == ([] if run < 3 else ["bad.iso"])
            # AND the run that quarantines it says it will be retried daily, not every run
            assert ("quarantined: retried daily" in stderr.strip().splitlines()[-1]) == (run == 3), stderr
        # THEN it is quarantined: the fourth run does not try it, and is no longer "partial"
        code, _, stderr = sync(daemon, endpoint)
        assert code == 0, stderr
        fourth = report(s3)
        assert fourth["failed"] == [] and [q["path"] for q in fourth["quarantined"]] == ["bad.iso"]
        assert "Permission denied" in fourth["quarantined"][0]["reason"]
        # AND once a day it is tried again: here the log says the last try was a day ago
        log_key = "state/failures.json"
        failures = json.loads(s3.get_object(Bucket=BUCKET, Key=log_key)["Body"].read())
        failures["paths"]["bad.iso"]["tried"] -= 86400
        s3.put_object(Bucket=BUCKET, Key=log_key, Body=json.dumps(failures).encode())
        os.chmod(upstream / "bad.iso", 0o644)
        code, _, stderr = sync(daemon, endpoint)
        assert code == 0, stderr
        assert mirror_files(s3)["bad.iso"] == b"bad"
        assert report(s3)["quarantined"] == []
    finally:
        os.chmod(upstream / "bad.iso", 0o644)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_apt_repo(root: Path, packages: dict[str, bytes], mtime: int) -> None:
    """A dists/ repository whose Packages names every .deb and whose Release names Packages."""
    for name, body in packages.items():
        write_file(root / f"pool/main/{name}", body, mtime)
    stanzas = "".join(
        f"Package: {name.split('_')[0]}\nFilename: pool/main/{name}\nSize: {len(body)}\nSHA256: {sha256(body)}\n\n"
        for name, body in sorted(packages.items())
    )
    write_file(root / "dists/stable/main/binary-all/Packages", stanzas.encode(), mtime)
    write_file(root / "dists/stable/main/binary-all/Packages.gz", gzip.compress(stanzas.encode(), mtime=0), mtime)
    index = root / "dists/stable/main/binary-all"
    lines = "".join(
        f" {sha256(p.read_bytes())} {p.stat().st_size} main/binary-all/{p.name}\n" for p in sorted(index.iterdir())
    )
    write_file(root / "dists/stable/Release", f"Suite: stable\nSHA256:\n{lines}".encode(), mtime)


def test_an_index_naming_a_file_that_failed_is_held_back_with_what_names_it(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN a published apt repository
    v1 = {"a_1_all.deb": b"a1", "b_1_all.deb": b"b1"}
    write_apt_repo(upstream, v1, 1_700_000_000)
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint)[0] == 0
    published = mirror_files(s3)
    # WHEN an update adds two packages, one of which upstream will not send, and drops one
    (upstream / "pool/main/b_1_all.deb").unlink()
    write_apt_repo(upstream, {"a_1_all.deb": b"a1", "c_1_all.deb": b"c1", "d_1_all.deb": b"d1"}, 1_700_000_100)
    os.chmod(upstream / "pool/main/d_1_all.deb", 0)
    try:
        code, _, stderr = sync(daemon, endpoint)
    finally:
        os.chmod(upstream / "pool/main/d_1_all.deb", 0o644)
    # THEN Packages (which names it) and Release (which names Packages) keep their published
    # versions, the other new package is published, and the dropped one stays for the old index
    assert code == 5, stderr
    assert "1 path was skipped and 3 index files that name them held back" in stderr.strip().splitlines()[-1]
    served = mirror_files(s3)
    for index in ("Packages", "Packages.gz"):
        assert served[f"dists/stable/main/binary-all/{index}"] == published[f"dists/stable/main/binary-all/{index}"]
    assert served["dists/stable/Release"] == published["dists/stable/Release"]
    assert served["pool/main/c_1_all.deb"] == b"c1" and "pool/main/b_1_all.deb" in served
    held = {h["path"]: h["because"] for h in report(s3)["held_indexes"]}
    assert held["dists/stable/main/binary-all/Packages"] == "pool/main/d_1_all.deb"
    assert held["dists/stable/Release"].startswith("dists/stable/main/binary-all/Packages")
    # AND the next run publishes the whole update
    code, _, stderr = sync(daemon, endpoint)
    assert code == 0, stderr
    assert mirror_files(s3) == readable(upstream)


def test_names_with_a_line_break_are_reported_unmirrorable_and_other_controls_escaped(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    write_file(upstream / "ok.txt", b"ok", 1_700_000_000)
    write_file(upstream / "line\nbreak.txt", b"nl", 1_700_000_000)
    write_file(upstream / "carriage\rreturn.txt", b"cr", 1_700_000_000)
    write_file(upstream / "bell\x07and\x1b[31mescape.txt", b"esc", 1_700_000_000)
    code, _, stderr = sync(rsync_daemon(upstream), endpoint)
    assert code == 0, stderr
    skipped = {s["path"]: s["reason"] for s in report(s3)["skipped"]}
    assert set(skipped) == {"line\nbreak.txt", "carriage\rreturn.txt"}
    assert all("line break" in reason for reason in skipped.values())
    served = mirror_files(s3)
    assert served["bell\x07and\x1b[31mescape.txt"] == b"esc"
    # The index page and the log lines show the control characters escaped, never raw.
    page = s3.get_object(Bucket=BUCKET, Key="pub/")["Body"].read().decode()
    visible = page.split("<script", 1)[0]
    assert "\x1b" not in visible and "\x07" not in visible and "bell\\#007and\\#033[31mescape.txt" in visible
    assert "\x1b" not in stderr and "\x07" not in stderr


def test_a_file_larger_than_the_staging_budget_is_streamed_through_a_tiny_disk(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a 48 MiB file, a 16 MiB staging disk and a staging budget of 2 MiB (rsync on loopback
    # writes a few MiB in the millisecond it takes to pause it: the disk needs that margin)
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    assert mounted.returncode == 0, f"mounting a tmpfs needs root, as CI has: {mounted.stderr!r}"
    try:
        big = os.urandom(48 * 1024 * 1024)
        write_file(upstream / "isos/big.iso", big, 1_700_000_000)
        write_file(upstream / "small", b"small", 1_700_000_000)
        # WHEN synced
        code, _, stderr = sync(rsync_daemon(upstream), endpoint, "--staging-dir", str(mount), "--staging-bytes", "2M")
        # THEN it arrives whole, uploaded in parts as it came, and its SHA-256 is in the manifest
        assert code == 0, stderr
        assert mirror_files(s3)["isos/big.iso"] == big
        assert report(s3)["streamed_files"] == 1
        head = s3.head_object(Bucket=BUCKET, Key="pub/isos/big.iso")
        assert head["Metadata"]["mtime"] == "1700000000" and "-" in head["ETag"]  # multipart
        manifest = gzip.decompress(s3.get_object(Bucket=BUCKET, Key="state/manifest.jsonl.gz")["Body"].read())
        row = next(json.loads(line) for line in manifest.splitlines()[1:] if b"big.iso" in line)
        assert row[5] == sha256(big)
        assert list(mount.iterdir()) == []  # nothing left behind
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_an_s3_endpoint_that_cannot_be_reached_fails_within_15_seconds(
    upstream: Path, rsync_daemon: DaemonFactory, tmp_path: Path
) -> None:
    write_file(upstream / "a", b"a", 1_700_000_000)
    daemon = rsync_daemon(upstream)
    # A listener whose accept queue is full and never drained drops further SYNs: a silent endpoint.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(silent.getsockname())
        fillers.append(filler)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        for endpoint in (
            f"http://127.0.0.1:{closed_port}",  # refuses connections
            "http://nonexistent.invalid:9000",  # does not resolve (RFC 2606: never)
            f"http://127.0.0.1:{silent.getsockname()[1]}",  # answers nothing
        ):
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "mirrorkeeper", "sync", "--upstream", daemon.url, "--bucket", BUCKET],
                env=cli_env(endpoint),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            took = time.monotonic() - started
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and took < 15, (endpoint, took, result.stderr)
            assert len(lines) == 1 and "cannot reach the AWS endpoint" in lines[0], result.stderr
            assert "Traceback" not in result.stderr
    finally:
        for filler in fillers:
            filler.close()
        silent.close()
