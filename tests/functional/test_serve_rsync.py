"""serve-rsync as users meet it: a real ``mirrorkeeper serve-rsync`` (and so Debian's rsync daemon)
against the moto server, pulled from by real rsync clients."""

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import TreeSpec, generate_tree, mutate, write_file
from tests.faultproxy import fault_proxy
from tests.support import BUCKET, pull, run_cli, serve_rsync, served, tree_files, tree_shape, wait_until

DaemonFactory = Callable[[Path], RsyncDaemon]
OURS = ".mirrorkeeper"


def sync(daemon: RsyncDaemon, endpoint: str) -> None:
    result = run_cli(["sync", "--upstream", daemon.url, "--bucket", BUCKET], endpoint)
    assert result.returncode == 0, result.stderr


def without_ours(shape: dict[str, Any]) -> dict[str, Any]:
    return {path: value for path, value in shape.items() if path != OURS and not path.startswith(OURS + "/")}


@contextmanager
def counting_gets(target: str, delay: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    """A proxy in front of S3 that records the key of every GET, each answered after ``delay``
    seconds; yields its URL and that list."""
    gets: list[str] = []
    lock = threading.Lock()

    def record(method: str, path: str, number: int) -> None:
        parts = urlsplit(path)
        if method == "GET" and not parts.query.startswith("list-type"):
            time.sleep(delay)
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
        # WHEN a sync changes 1% of the files (2 changed, 2 added, 2 deleted); only serve-rsync talks
        # through the proxy, and it may fetch the change before the sync's process has ended
        done = mutate(upstream, paths, 0.01)
        gets.clear()
        sync(daemon, endpoint)
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


def yum_version(repository: Path, version: int) -> None:
    """A yum-like repository's version: repomd.xml naming data files whose names change every version
    (as createrepo's checksum-named files do), the old ones deleted."""
    repodata = repository / "repodata"
    if repodata.exists():
        shutil.rmtree(repodata)
    names = [f"{version:04d}{kind}-primary.xml.gz" for kind in "abcdefgh"]
    for name in names:
        write_file(repodata / name, os.urandom(300_000), 1_700_000_000 + version)
    hrefs = "".join(f'<location href="repodata/{name}"/>' for name in names)
    write_file(repodata / "repomd.xml", f"<repomd>{hrefs}</repomd>\n".encode(), 1_700_000_000 + version)


def named_but_missing(copy: Path) -> set[str]:
    repomd = copy / "repodata/repomd.xml"
    if not repomd.exists():
        return set()
    named = set(re.findall(r'href="([^"]+)"', repomd.read_text()))
    return {name for name in named if not (copy / name).is_file()}


def test_a_client_pulling_in_a_loop_never_ends_with_an_index_naming_a_missing_file(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a yum-like repository synced and served, the replica reading S3 slowly (each GET 20 ms)
    yum_version(upstream, 1)
    daemon = rsync_daemon(upstream)
    sync(daemon, endpoint)
    with (
        counting_gets(endpoint, delay=0.02) as (proxy, _),
        serve_rsync(proxy, tmp_path / "replica", "--download-concurrency", "1") as server,
    ):
        wait_until(lambda: served(server.port, tmp_path / "probe"), what="the first build")
        # WHEN the next version is published and the replica applies it while a client pulls in a loop
        yum_version(upstream, 2)
        sync(daemon, endpoint)
        copy, seen = tmp_path / "copy", []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = pull(server.port, copy)
            assert result.returncode == 0, result.stderr
            # THEN after every pull, every file its repomd.xml names is there
            assert named_but_missing(copy) == set()
            seen.append((copy / "repodata/repomd.xml").read_text().count("0002"))
            if seen[-1]:
                break
    assert seen[-1] and len(seen) > 1, seen  # it saw the old version, then the new one


def test_a_restart_mid_build_resumes_and_transfers_are_refused_until_the_build_is_complete(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN 150 files synced, and serve-rsync building its replica slowly (each GET 20 ms, one at a time)
    generate_tree(upstream, TreeSpec(files=150, total_bytes=300_000))
    sync(rsync_daemon(upstream), endpoint)
    replica = tmp_path / "replica"
    with counting_gets(endpoint, delay=0.02) as (proxy, gets):
        with serve_rsync(proxy, replica, "--download-concurrency", "1") as server:
            # THEN while it builds, a client is told so and gets nothing
            refused = pull(server.port, tmp_path / "early")
            assert refused.returncode != 0
            assert "module mirror is initialising its replica" in refused.stderr
            assert not list((tmp_path / "early").rglob("*.bin"))
            # WHEN it is killed (SIGKILL: no clean-up) a third of the way through
            wait_until(lambda: len(list(replica.rglob("*.bin"))) >= 50, what="a third of the build")
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
        assert not (replica / "mirror").exists()  # nothing half-built is ever served
        # the files the killed build had completed: in its snapshot, under their own names
        (killed,) = [p for p in (replica / ".replica/mirror").iterdir() if not p.name.endswith(".incoming")]
        complete = {"pub/" + p.relative_to(killed).as_posix() for p in killed.rglob("*.bin")}
        gets.clear()
        # AND started again
        with serve_rsync(proxy, replica) as server:
            wait_until(lambda: served(server.port, tmp_path / "probe"), what="the resumed build")
            result = pull(server.port, tmp_path / "copy")
    # THEN it fetched only what the first run had not completed (by key: a GET the client retried
    # under load counts once), and serves the whole tree
    assert result.returncode == 0, result.stderr
    again = {key for key in gets if key.endswith(".bin")}
    assert len(complete) >= 50 and not again & complete
    assert len(again | complete) == len([p for p in upstream.rglob("*.bin")])
    assert without_ours(tree_files(tmp_path / "copy")) == tree_files(upstream)


def test_a_replica_disk_too_small_is_one_line_and_exit_1_with_nothing_served(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tiny_disk: Path
) -> None:
    # GIVEN a mirror of 1 MB and a replica directory on a 256 KiB disk
    generate_tree(upstream, TreeSpec(files=20, total_bytes=1_000_000))
    sync(rsync_daemon(upstream), endpoint)
    # WHEN serve-rsync starts on it
    result = run_cli(
        ["serve-rsync", "--bucket", BUCKET, "--replica-dir", str(tiny_disk), "--port", "0", "--replica-reserve", "0"],
        endpoint,
    )
    # THEN it exits 1 with one line saying what to do, and no module was ever offered as complete
    assert result.returncode == 1
    said = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # not the JSON log
    assert len(said) == 1 and said[0].startswith("mirrorkeeper serve-rsync: error: the replica directory"), said
    assert "more plus the --replica-reserve" in said[0]
    assert not (tiny_disk / "mirror").exists()


def test_verify_probes_the_rsync_module_and_gives_it_its_own_row(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a synced mirror served over rsync
    generate_tree(upstream, TreeSpec(files=30, total_bytes=100_000))
    sync(rsync_daemon(upstream), endpoint)
    with serve_rsync(endpoint, tmp_path / "replica") as server:
        wait_until(lambda: served(server.port, tmp_path / "probe"), what="the first build")
        url = f"rsync://127.0.0.1:{server.port}/mirror/"
        # WHEN verify probes it
        result = run_cli(["verify", "--bucket", BUCKET, "--rsync-url", url, "--metrics", "none"], endpoint)
        # THEN the listing, the trace, the sampled files (hashes too) and the missing path all pass
        assert result.returncode == 0, result.stdout + result.stderr
        row = next(line for line in result.stdout.splitlines() if line.startswith("rsync "))
        assert re.search(r"rsync\s+ok\s+\d+ s ago\s+(\d+)/\1\s+ENOENT ok", row), row
        # AND the status page has its row
        status = s3.get_object(Bucket=BUCKET, Key=f"pub/{OURS}/status.json")["Body"].read()
        assert b'"rsync"' in status
    # AND once the module is gone, rsync is down
    down = run_cli(["verify", "--bucket", BUCKET, "--rsync-url", url, "--metrics", "none"], endpoint)
    assert down.returncode == 1 and re.search(r"^rsync\s+down", down.stdout, re.MULTILINE), down.stdout


def test_a_host_of_two_mirrors_is_two_modules_named_by_path_each_pulling_its_own_tree(
    s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a host of two mirrors, one under a nested path, synced from two upstream modules
    trees = {"openvz": tmp_path / "openvz", "debian": tmp_path / "debian"}
    generate_tree(trees["openvz"], TreeSpec(files=20, total_bytes=40_000, seed=3))
    generate_tree(trees["debian"], TreeSpec(files=25, total_bytes=50_000, seed=4))
    config = tmp_path / "mirrors.toml"
    with RsyncDaemon(trees["openvz"], module="openvz", more={"debian": trees["debian"]}) as daemon:
        config.write_text(
            f'[host]\nname = "mirrors.test"\nbucket = "{BUCKET}"\n\n'
            f'[mirrors.openvz]\nupstream = "{daemon.url_of("openvz")}"\n\n'
            f'[mirrors.debian]\nupstream = "{daemon.url_of("debian")}"\npath = "linux/debian"\n'
        )
        result = run_cli(["sync", "--config", str(config), "--all"], endpoint)
        assert result.returncode == 0, result.stderr
    # WHEN serve-rsync serves the host
    replica = tmp_path / "replica"
    with serve_rsync(endpoint, replica, "--config", str(config)) as server:
        wait_until(lambda: (replica / "openvz").is_symlink() and (replica / "linux-debian").is_symlink(), what="builds")
        # THEN each mirror is a module named by its path ('/' → '-'), listed with its name
        listing = subprocess.run(
            ["rsync", f"rsync://127.0.0.1:{server.port}/"], capture_output=True, text=True, timeout=30, check=False
        )
        modules = {
            line.split()[0] for line in listing.stdout.splitlines() if line and not line.startswith("mirrors.test")
        }
        assert modules == {"openvz", "linux-debian"}, listing.stdout
        # AND a client pulling each gets that mirror's tree, and no other's
        for module, mirror in (("openvz", "openvz"), ("linux-debian", "debian")):
            pulled = pull(server.port, tmp_path / f"copy-{module}", module=module)
            assert pulled.returncode == 0, pulled.stderr
            assert without_ours(tree_files(tmp_path / f"copy-{module}")) == tree_files(trees[mirror]), module
