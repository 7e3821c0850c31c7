"""serve-rsync as users meet it: a real ``mirrorkeeper serve-rsync`` (and so Debian's rsync daemon)
against the moto server, pulled from by real rsync clients."""

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import TreeSpec, generate_tree, mutate
from mirrorkeeper_dev.services import serving
from tests.faultproxy import fault_proxy
from tests.support import BUCKET, cli_env, run_cli, tree_files, tree_shape

DaemonFactory = Callable[[Path], RsyncDaemon]
OURS = ".mirrorkeeper"


@contextmanager
def serve_rsync(endpoint: str, replica: Path, *extra: str) -> Iterator["subprocess.Popen[bytes]"]:
    """``mirrorkeeper serve-rsync`` on a free port, polling fast; yields the process, its port in ``.port``."""
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


def sync(daemon: RsyncDaemon, endpoint: str) -> None:
    result = run_cli(["sync", "--upstream", daemon.url, "--bucket", BUCKET], endpoint)
    assert result.returncode == 0, result.stderr


def without_ours(shape: dict[str, Any]) -> dict[str, Any]:
    return {path: value for path, value in shape.items() if path != OURS and not path.startswith(OURS + "/")}


@contextmanager
def counting_gets(target: str) -> Iterator[tuple[str, list[str]]]:
    """A proxy in front of S3 that records the key of every GET; yields its URL and that list."""
    gets: list[str] = []
    lock = threading.Lock()

    def record(method: str, path: str, number: int) -> None:
        parts = urlsplit(path)
        if method == "GET" and not parts.query.startswith("list-type"):
            with lock:
                gets.append(unquote(parts.path).removeprefix(f"/{BUCKET}/"))

    with fault_proxy(target, record) as stats:
        yield str(stats["url"]), gets


def test_a_client_pull_equals_upstream_bytes_mtimes_symlinks_and_hostile_names(
    hostile_mirror: Path, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN the hostile-name tree (with symlinks and an empty directory) synced into S3, and serve-rsync
    with serve_rsync(endpoint, tmp_path / "replica") as server:
        wait_until(lambda: served(server.port, tmp_path / "probe"), what="the first build")
        # WHEN a downstream mirror pulls the module with rsync -a --delete
        copy = tmp_path / "copy"
        result = pull(server.port, copy)
    # THEN it has upstream's tree exactly: names, bytes, mtimes, symlinks as symlinks, empty directories
    assert result.returncode == 0, result.stderr
    assert without_ours(tree_shape(copy)) == tree_shape(hostile_mirror)
    assert without_ours(tree_files(copy)) == tree_files(hostile_mirror)
    assert without_ours(mtimes(copy)) == mtimes(hostile_mirror)  # directories' and symlinks' too
    # AND our trace file, as HTTP and FTP serve it
    assert (copy / OURS / "trace").read_bytes() == s3.get_object(Bucket=BUCKET, Key=f"pub/{OURS}/trace")["Body"].read()


def mtimes(root: Path) -> dict[str, int]:
    """Every entry's mtime in whole seconds (what rsync and the manifest keep), symlinks' own."""
    return {path.relative_to(root).as_posix(): int(path.lstat().st_mtime) for path in root.rglob("*")}


def trace_of(port: int, scratch: Path) -> bytes:
    """The trace file the module serves now (b'' while it cannot be fetched)."""
    scratch.mkdir(exist_ok=True)
    result = subprocess.run(
        ["rsync", "-t", f"rsync://127.0.0.1:{port}/mirror/{OURS}/trace", f"{scratch}/trace"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return (scratch / "trace").read_bytes() if result.returncode == 0 else b""


def transferred(result: subprocess.CompletedProcess[str]) -> tuple[set[str], int]:
    """The files a ``--out-format=%n --stats`` pull wrote, by name, and the count its statistics give."""
    names = {line for line in result.stdout.splitlines() if line and not line.endswith("/") and " " not in line}
    count = re.search(r"Number of regular files transferred: (\d+)", result.stdout)
    assert count is not None, result.stdout
    return names, int(count.group(1))


def test_a_one_percent_change_is_fetched_from_s3_and_pulled_alone(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN 200 files synced, a replica built through a proxy that counts GETs, and a client's full copy
    paths = generate_tree(upstream, TreeSpec(files=200, total_bytes=2_000_000))
    daemon = rsync_daemon(upstream)
    sync(daemon, endpoint)
    copy = tmp_path / "copy"
    with counting_gets(endpoint) as (proxy, gets), serve_rsync(proxy, tmp_path / "replica") as server:
        wait_until(lambda: served(server.port, tmp_path / "probe"), what="the first build")
        assert pull(server.port, copy).returncode == 0
        first_trace = trace_of(server.port, tmp_path / "t")
        # WHEN a sync changes 1% of the files (2 changed, 2 added, 2 deleted)
        done = mutate(upstream, paths, 0.01)
        sync(daemon, endpoint)
        gets.clear()
        wait_until(lambda: trace_of(server.port, tmp_path / "t") not in (b"", first_trace), what="the update")
        # THEN the replica fetched those objects and no other data
        data = sorted(key for key in gets if key.startswith("pub/") and not key.startswith(f"pub/{OURS}/"))
        assert data == sorted(f"pub/{path}" for path in done["changed"] + done["added"])
        assert set(gets) - set(data) <= {"state/manifest.jsonl.gz", f"pub/{OURS}/trace"}
        # AND a client's next pull transfers those files alone (and the new trace)
        result = pull(server.port, copy, "--stats", "--out-format=%n")
    assert result.returncode == 0, result.stderr
    names, count = transferred(result)
    assert names == {*done["changed"], *done["added"], f"{OURS}/trace"}
    assert count == len(names)
    assert without_ours(tree_files(copy)) == tree_files(upstream)
