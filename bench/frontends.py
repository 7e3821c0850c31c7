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
Run: ``.venv/bin/python bench/frontends.py`` (about a minute); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import ftplib
import http.client
import io
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from harness import BenchError, MotoServer, wait_for_port
from run import clean_env

from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import TreeSpec, generate_tree, write_file

BUCKET = "bench-frontends"
BIG = "big/100MB.iso"


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Servers:
    """Every process the benchmark starts, stopped together."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir = env, workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], what: str) -> int:
        port = free_port()
        full = [a.replace("{port}", str(port)) for a in args]
        process = subprocess.Popen(
            full, env=self.env, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.processes.append(process)
        wait_for_port(port, process, what)
        return port

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(10)


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
    quick = parser.parse_args(argv).quick
    requests, big_size = (400, 10_000_000) if quick else (2000, 100_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-frontends-") as tmp:
        workdir = Path(tmp)
        (workdir / "tmp").mkdir()
        upstream = workdir / "upstream"
        paths = generate_tree(upstream, TreeSpec(files=200, total_bytes=200 * 4096, max_depth=2, fanout=4))
        write_file(upstream / BIG, bytes(range(256)) * (big_size // 256), 1_700_000_000)
        big_size = (upstream / BIG).stat().st_size
        with MotoServer(workdir, clean_env(workdir, "")) as moto:
            env = clean_env(workdir, moto.url)
            _s3(moto.url).create_bucket(Bucket=BUCKET)
            progress("syncing the tree into the moto server")
            with RsyncDaemon(upstream) as daemon:
                mk = [sys.executable, "-m", "mirrorkeeper"]
                sync = subprocess.run(
                    [*mk, "sync", "--upstream", daemon.url, "--bucket", BUCKET],
                    env=env,
                    capture_output=True,
                    check=False,
                )
                if sync.returncode != 0:
                    raise BenchError(f"sync failed: {sync.stderr.decode()[-500:]}")
            servers = Servers(env, workdir)
            try:
                serve = ["--bucket", BUCKET, "--port", "{port}", "--log-level", "WARNING"]
                ours_http = servers.start([*mk, "serve-http", *serve], "serve-http")
                uncached_http = servers.start([*mk, "serve-http", *serve, "--cache-ttl", "0"], "serve-http")
                # 32 sessions from one address: above the per-IP default (16) meant for the public
                ours_ftp = servers.start([*mk, "serve-ftp", *serve, "--max-connections-per-ip", "64"], "serve-ftp")
                disk_http = servers.start(
                    [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(upstream), "{port}"],
                    "http.server",
                )
                disk_ftp = servers.start(
                    [sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", "{port}", "-d", str(upstream)],
                    "pyftpdlib",
                )
                ports = Ports(ours_http, uncached_http, disk_http, ours_ftp, disk_ftp)
                rows = measure(moto, paths, upstream, requests, big_size, ports)
            finally:
                servers.stop()
    print_table(rows)
    return 0 if all(row[-1] is not False for row in rows) else 1


Row = tuple[str, str, str, str, str, bool | None]  # met: None for an informational row


@dataclass(frozen=True)
class Ports:
    ours_http: int
    uncached_http: int
    disk_http: int
    ours_ftp: int
    disk_ftp: int


def measure(
    moto: MotoServer, paths: list[str], upstream: Path, requests: int, big_size: int, ports: Ports
) -> list[Row]:
    endpoint = moto.url
    progress(f"HTTP: {requests} GETs, 16 clients")
    before = moto.log_offset()
    ours, ours_errors = http_get_rate(ports.ours_http, paths, requests, 16)
    http_s3 = moto.requests_since(before)
    disk, disk_errors = http_get_rate(ports.disk_http, paths, requests, 16)
    moto_rate = moto_get_rate(endpoint, paths, requests, 16)
    uncached, uncached_errors = http_get_rate(ports.uncached_http, paths, requests, 16)
    progress(f"FTP: RETR of {big_size / 1e6:.0f} MB")
    ours_retr = ftp_retr_rate(ports.ours_ftp, "/" + BIG, big_size)
    disk_retr = ftp_retr_rate(ports.disk_ftp, "/" + BIG, big_size)
    moto_retr = moto_object_rate(endpoint, "pub/" + BIG, big_size)
    directory = str(Path(paths[0]).parent)
    files = [(f"/{p}", (upstream / p).stat().st_size) for p in paths if str(Path(p).parent) == directory][:20]
    progress(f"FTP: 32 sessions x (LIST + {len(files)} RETR)")
    before = moto.log_offset()
    ours_secs, ours_ftp_errors = ftp_sessions(ports.ours_ftp, "/" + directory, files, 32)
    ftp_s3 = moto.requests_since(before)
    disk_secs, disk_ftp_errors = ftp_sessions(ports.disk_ftp, "/" + directory, files, 32)
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
        _row("FTP RETR big file, MB/s", ours_retr, disk_retr, f"moto {moto_retr:.0f}", True),
        _row(
            f"FTP 32 sessions x {len(files)} files, s (lower is better)",
            ours_secs,
            disk_secs,
            f"errors {ours_ftp_errors}/{disk_ftp_errors}; {ftp_s3} S3 requests",
            ours_ftp_errors == disk_ftp_errors == 0,
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
    table = [headers, *[(*row[:5], {True: "yes", False: "NO", None: "info"}[row[5]]) for row in rows]]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(headers))]
    for line in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
