"""Front-end benchmark: ``serve-http`` and ``serve-ftp`` over S3 against the same tree on local disk.

Baselines, named as issue 3 names them:

- HTTP: 2,000 GETs of small files, 16 concurrent clients, requests/s, against ``python -m http.server``
  serving the upstream directory;
- FTP: ``RETR`` of a 100 MB file, MB/s, against pyftpdlib (``python -m pyftpdlib``) serving the
  same directory; then 32 concurrent FTP sessions each listing a directory and fetching 20 files,
  which must finish with 0 errors, on both.

A third column measures the moto server alone (the same GETs through boto3, no front end), so
the table shows how much of the gap is the local S3 stand-in rather than the front end, and how
many requests each step sent to it. The front ends run with their default object cache
(``--cache-ttl 10``); one informational row runs ``serve-http --cache-ttl 0``, every GET going to S3.
A second table runs serve-ftp from this tree and from a git revision (``--baseline REV``; default
the merge-base with ``main``) side by side: the revision's package is extracted with ``git archive``
and run with ``PYTHONPATH`` pointing at it. Each of ``--rounds`` rounds starts both servers afresh
(a cold cache, as the first table sees it) in alternating order and measures the RETR and the 32
sessions on each; the medians are compared against issue 10's gate (the new path at >= 0.9x the
old one's speed). The first table's FTP rows are this tree's medians.

Run: ``.venv/bin/python bench/frontends.py`` (two minutes or so, more on a busy machine); ``--quick`` for a smoke
run.
"""

from __future__ import annotations

import argparse
import compileall
import ftplib
import http.client
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from harness import BenchError, MotoServer, compile_mirrorkeeper, wait_for_port
from run import clean_env

from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import TreeSpec, generate_tree, write_file

BUCKET = "bench-frontends"
BIG = "big/100MB.iso"
REPO = Path(__file__).resolve().parent.parent
GATE = 0.9  # issue 10: the new FTP path keeps at least this share of the old one's speed


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Servers:
    """Every process the benchmark starts, stopped together."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir = env, workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], what: str, env: dict[str, str] | None = None) -> int:
        port = free_port()
        full = [a.replace("{port}", str(port)) for a in args]
        process = subprocess.Popen(
            full, env=env or self.env, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.processes.append(process)
        wait_for_port(port, process, what)
        return port

    @contextmanager
    def running(self, args: Sequence[str], what: str, env: dict[str, str] | None = None) -> Iterator[int]:
        """A server for one step only: started fresh (an empty cache), stopped after it."""
        port = self.start(args, what, env)
        process = self.processes[-1]
        try:
            yield port
        finally:
            self.stop([process])

    def stop(self, processes: Sequence[subprocess.Popen[bytes]] | None = None) -> None:
        for process in list(self.processes if processes is None else processes):
            process.terminate()
            process.wait(10)
            self.processes.remove(process)


def default_baseline() -> str:
    """The merge-base with ``main``: the code this branch started from."""
    found = subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO, capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise BenchError("no merge-base with 'main' (a shallow or detached clone?): pass --baseline REV")
    return found.stdout.strip()


def extract_baseline(revision: str, into: Path) -> tuple[str, Path]:
    """The mirrorkeeper package as it was at ``revision``: its short hash, and the directory to put on PYTHONPATH.

    Compiled like this tree (``compile_mirrorkeeper``), so neither side pays for compiling at start."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{revision}^{{commit}}"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if commit.returncode != 0:
        raise BenchError(f"--baseline {revision!r} is not a commit of this repository")
    archive = subprocess.run(
        ["git", "archive", commit.stdout.strip(), "layers/mirrorkeeper"], cwd=REPO, capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {revision} failed: {archive.stderr.decode()[-300:]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    package = into / "layers" / "mirrorkeeper"
    if not compileall.compile_dir(package / "mirrorkeeper", quiet=1):
        raise BenchError(f"could not compile mirrorkeeper at {revision}")
    return commit.stdout.strip(), package


def http_get_rate(port: int, paths: list[str], requests: int, clients: int) -> tuple[float, int]:
    """Requests/s of ``requests`` GETs spread over ``clients`` threads, each with one connection
    (reopened when the server closes it, as HTTP/1.0 http.server does); and the error count."""
    errors = 0
    lock = threading.Lock()

    def client(index: int) -> None:
        nonlocal errors
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for n in range(index, requests, clients):
            connection.request("GET", "/" + quote(paths[n % len(paths)]))
            response = connection.getresponse()
            body = response.read()
            if response.status != 200 or not body:
                with lock:
                    errors += 1
        connection.close()

    return _timed_rate(client, clients, requests), errors


def moto_get_rate(endpoint: str, paths: list[str], requests: int, clients: int) -> float:
    s3 = _s3(endpoint, clients)

    def client(index: int) -> None:
        for n in range(index, requests, clients):
            s3.get_object(Bucket=BUCKET, Key="pub/" + paths[n % len(paths)])["Body"].read()

    return _timed_rate(client, clients, requests)


def moto_object_rate(endpoint: str, key: str, size: int) -> float:
    """MB/s of one GET of ``key`` straight from the moto server: the ceiling any S3-backed server has here."""
    started = time.monotonic()
    body = _s3(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"]
    received = sum(len(chunk) for chunk in body.iter_chunks(1 << 20))
    if received != size:
        raise BenchError(f"moto returned {received} bytes of {key}, expected {size}")
    return size / (time.monotonic() - started) / 1e6


def _s3(endpoint: str, pool: int = 10) -> Any:
    """A client of the local moto server (dummy credentials: it takes any, and real ones must not be sent)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=pool),
    )


def _timed_rate(work: Callable[[int], None], clients: int, count: int) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))
    return count / (time.monotonic() - started)


def ftp_retr_rate(port: int, path: str, size: int) -> float:
    ftp = ftplib.FTP(timeout=60)
    ftp.connect("127.0.0.1", port)
    ftp.login()
    received = 0

    def count(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)

    started = time.monotonic()
    ftp.retrbinary(f"RETR {path}", count, blocksize=1 << 20)
    elapsed = time.monotonic() - started
    ftp.quit()
    if received != size:
        raise BenchError(f"RETR {path} on port {port} returned {received} bytes, expected {size}")
    return size / elapsed / 1e6


def ftp_sessions(port: int, directory: str, files: list[tuple[str, int]], sessions: int) -> tuple[float, int]:
    """``sessions`` concurrent sessions, each LIST + RETR of every file; seconds taken and errors."""
    errors = 0
    lock = threading.Lock()

    def session(_: int) -> None:
        nonlocal errors
        try:
            ftp = ftplib.FTP(timeout=60, encoding="utf-8")
            ftp.connect("127.0.0.1", port)
            ftp.login()
            ftp.retrlines(f"LIST {directory}", lambda line: None)
            for path, size in files:
                out = io.BytesIO()
                ftp.retrbinary(f"RETR {path}", out.write)
                if len(out.getvalue()) != size:
                    raise BenchError(f"short RETR of {path}")
            ftp.quit()
        except (OSError, ftplib.Error, BenchError):
            with lock:
                errors += 1

    started = time.monotonic()
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(session, range(sessions)))
    return time.monotonic() - started, errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/frontends.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers: a smoke run of every step")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="git revision whose serve-ftp runs beside this tree's (default: merge-base with main)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="side-by-side FTP rounds; medians count (default: 5)")
    options = parser.parse_args(argv)
    requests, big_size = (400, 10_000_000) if options.quick else (2000, 100_000_000)
    compile_mirrorkeeper()
    with tempfile.TemporaryDirectory(prefix="bench-frontends-") as tmp:
        workdir = Path(tmp)
        (workdir / "tmp").mkdir()
        revision = options.baseline or default_baseline()
        commit, package = extract_baseline(revision, workdir / "baseline")
        if not options.baseline:
            label = f"{commit} (merge-base with main)"
        else:
            label = commit if revision.startswith(commit) else f"{revision} ({commit})"
        upstream = workdir / "upstream"
        paths = generate_tree(upstream, TreeSpec(files=200, total_bytes=200 * 4096, max_depth=2, fanout=4))
        write_file(upstream / BIG, bytes(range(256)) * (big_size // 256), 1_700_000_000)
        big_size = (upstream / BIG).stat().st_size
        with MotoServer(workdir, clean_env(workdir, "")) as moto:
            env = clean_env(workdir, moto.url)
            _s3(moto.url).create_bucket(Bucket=BUCKET)
            progress("syncing the tree into the moto server")
            with RsyncDaemon(upstream) as daemon:
                sync = subprocess.run(
                    [*MIRRORKEEPER, "sync", "--upstream", daemon.url, "--bucket", BUCKET],
                    env=env,
                    capture_output=True,
                    check=False,
                )
                if sync.returncode != 0:
                    raise BenchError(f"sync failed: {sync.stderr.decode()[-500:]}")
            servers = Servers(env, workdir)
            try:
                http_rows = measure_http(servers, moto, upstream, paths, requests)
                directory = str(Path(paths[0]).parent)
                files = [(f"/{p}", (upstream / p).stat().st_size) for p in paths if str(Path(p).parent) == directory]
                work = FtpWork("/" + BIG, big_size, "/" + directory, files[:20])
                compared = compare_ftp(servers, moto, work, (commit, package), options.rounds)
                disk = measure_disk_ftp(servers, upstream, work)
            finally:
                servers.stop()
    rows = [*http_rows, *ftp_rows(compared, disk, len(work.files))]
    print_table(rows)
    print()
    gates = print_comparison(compared, label, options.rounds, len(work.files))
    clean = all(row[-1] is not False for row in rows) and compared.errors() == 0
    return 0 if clean and gates is not None else 1


MIRRORKEEPER = [sys.executable, "-m", "mirrorkeeper"]
SERVE = ["--bucket", BUCKET, "--port", "{port}", "--log-level", "WARNING"]
# 32 sessions from one address: above the per-IP default (16) meant for the public
SERVE_FTP = [*MIRRORKEEPER, "serve-ftp", *SERVE, "--max-connections-per-ip", "64"]

Row = tuple[str, str, str, str, str, bool | None]  # met: None for an informational row


@dataclass(frozen=True)
class FtpWork:
    big: str
    big_size: int
    directory: str
    files: list[tuple[str, int]]


@dataclass
class FtpFigures:
    """One serve-ftp's figures, one value per round."""

    retr: list[float] = field(default_factory=list)  # MB/s
    sessions: list[float] = field(default_factory=list)  # seconds for the 32 sessions
    s3_requests: list[int] = field(default_factory=list)  # during the 32 sessions
    errors: int = 0


@dataclass
class Compared:
    new: FtpFigures
    old: FtpFigures
    moto_retr: float

    def errors(self) -> int:
        return self.new.errors + self.old.errors


def measure_http(servers: Servers, moto: MotoServer, upstream: Path, paths: list[str], requests: int) -> list[Row]:
    ours_port = servers.start([*MIRRORKEEPER, "serve-http", *SERVE], "serve-http")
    uncached_port = servers.start([*MIRRORKEEPER, "serve-http", *SERVE, "--cache-ttl", "0"], "serve-http")
    disk_port = servers.start(
        [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(upstream), "{port}"],
        "http.server",
    )
    progress(f"HTTP: {requests} GETs, 16 clients")
    before = moto.log_offset()
    ours, ours_errors = http_get_rate(ours_port, paths, requests, 16)
    http_s3 = moto.requests_since(before)
    disk, disk_errors = http_get_rate(disk_port, paths, requests, 16)
    moto_rate = moto_get_rate(moto.url, paths, requests, 16)
    uncached, uncached_errors = http_get_rate(uncached_port, paths, requests, 16)
    servers.stop()
    return [
        _row(
            "HTTP GET small files, req/s",
            ours,
            disk,
            f"moto {moto_rate:.0f}; {http_s3} S3 requests",
            ours_errors + disk_errors == 0,
        ),
        _row(
            "  the same, serve-http --cache-ttl 0",
            uncached,
            disk,
            f"moto {moto_rate:.0f}; every GET to S3",
            uncached_errors == 0,
            informational=True,
        ),
    ]


def compare_ftp(servers: Servers, moto: MotoServer, work: FtpWork, baseline: tuple[str, Path], rounds: int) -> Compared:
    """This tree's serve-ftp and the baseline's, each started afresh every round, in alternating order
    so that neither always runs first (a warmer machine) or second."""
    old_env = {**servers.env, "PYTHONPATH": str(baseline[1])}
    sides = {"new": (FtpFigures(), None), "old": (FtpFigures(), old_env)}
    for round_number in range(rounds):
        order = ("new", "old") if round_number % 2 == 0 else ("old", "new")
        for side in order:
            figures, env = sides[side]
            what = "serve-ftp" if env is None else f"serve-ftp at {baseline[0]}"
            progress(f"FTP round {round_number + 1}/{rounds}, {what}: RETR, then 32 sessions")
            with servers.running(SERVE_FTP, what, env) as port:
                figures.retr.append(ftp_retr_rate(port, work.big, work.big_size))
                before = moto.log_offset()
                seconds, errors = ftp_sessions(port, work.directory, work.files, 32)
                figures.s3_requests.append(moto.requests_since(before))
                figures.sessions.append(seconds)
                figures.errors += errors
    return Compared(
        sides["new"][0], sides["old"][0], moto_object_rate(moto.url, "pub/" + work.big.lstrip("/"), work.big_size)
    )


def measure_disk_ftp(servers: Servers, upstream: Path, work: FtpWork) -> FtpFigures:
    disk = FtpFigures()
    with servers.running(
        [sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", "{port}", "-d", str(upstream)], "pyftpdlib"
    ) as port:
        progress("FTP on local disk (pyftpdlib)")
        disk.retr.append(ftp_retr_rate(port, work.big, work.big_size))
        seconds, disk.errors = ftp_sessions(port, work.directory, work.files, 32)
        disk.sessions.append(seconds)
    return disk


def ftp_rows(compared: Compared, disk: FtpFigures, files: int) -> list[Row]:
    """The first table's FTP rows: this tree's medians against pyftpdlib on local disk (issue 3's targets)."""
    ours = compared.new
    return [
        _row(
            "FTP RETR big file, MB/s",
            statistics.median(ours.retr),
            disk.retr[0],
            f"moto {compared.moto_retr:.0f}",
            True,
        ),
        _row(
            f"FTP 32 sessions x {files} files, s (lower is better)",
            statistics.median(ours.sessions),
            disk.sessions[0],
            f"errors {ours.errors}/{disk.errors}; {int(statistics.median(ours.s3_requests))} S3 requests",
            ours.errors == disk.errors == 0,
            lower_is_better=True,
        ),
    ]


def _row(
    name: str,
    ours: float,
    disk: float,
    note: str,
    clean: bool,
    lower_is_better: bool = False,
    informational: bool = False,
) -> Row:
    ratio = disk / ours if lower_is_better else ours / disk
    met: bool | None = clean and ratio >= 0.5
    if informational:
        met = None if clean else False  # no target, but errors still fail the run
    return (name, f"{ours:.1f}", f"{disk:.1f}", f"{ratio:.2f}x", note, met)


def print_table(rows: list[Row]) -> None:
    headers = ("metric", "mirrorkeeper", "local disk", "ratio (target >= 0.5x)", "moto alone / notes", "met")
    _print_columns([headers, *[(*row[:5], {True: "yes", False: "NO", None: "info"}[row[5]]) for row in rows]])


def print_comparison(compared: Compared, baseline: str, rounds: int, files: int) -> bool | None:
    """The side-by-side table and issue 10's gate; True when both figures pass, None when a side had errors."""
    new, old = compared.new, compared.old
    print(f"serve-ftp: this tree (new) vs baseline {baseline} (old), {rounds} rounds, fresh servers, medians")
    retr = statistics.median(new.retr) / statistics.median(old.retr)
    # Seconds: the speed ratio is old time over new time, so that above 1.0x is faster for both rows.
    sessions = statistics.median(old.sessions) / statistics.median(new.sessions)
    headers = ("metric", "new (each round)", "old (each round)", "new", "old", "new/old speed", f"gate >= {GATE}x")
    _print_columns(
        [
            headers,
            _compared("FTP RETR big file, MB/s", new.retr, old.retr, "{:.0f}", retr),
            _compared(f"FTP 32 sessions x {files} files, s", new.sessions, old.sessions, "{:.2f}", sessions),
            (
                "  S3 requests per 32 sessions",
                " ".join(str(v) for v in new.s3_requests),
                " ".join(str(v) for v in old.s3_requests),
                "",
                "",
                f"errors {new.errors}/{old.errors}",
                "",
            ),
        ]
    )
    if compared.errors():
        return None
    return retr >= GATE and sessions >= GATE


def _compared(name: str, new: list[float], old: list[float], form: str, ratio: float) -> tuple[str, ...]:
    rounds = (" ".join(form.format(v) for v in side) for side in (new, old))
    medians = (form.format(statistics.median(side)) for side in (new, old))
    return (name, *rounds, *medians, f"{ratio:.2f}x", "PASS" if ratio >= GATE else "MISS")


def _print_columns(table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(line[i])) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
