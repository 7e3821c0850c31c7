"""Probes against real servers on loopback that misbehave in the ways a mirror does: a module the
rsync daemon does not have, a port nobody listens on, a server that accepts and never answers,
content that is not what the manifest says."""

import ftplib
import hashlib
import random
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.state import Level, StateStore
from mirrorkeeper.verify.health import assess_endpoint
from mirrorkeeper.verify.probes import (
    Outcome,
    ProbeFindingError,
    ProbeKind,
    SampleFile,
    choose_sample,
    probe_endpoint,
    rsync_handshake,
)
from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import HOSTILE_NAMES, add_hostile_names, write_file
from tests.support import BUCKET, run_cli, serve_cli, serve_rsync, served, wait_until


def test_rsync_handshake_accepts_the_module_and_refuses_a_missing_one(rsync_daemon: Any, upstream: Path) -> None:
    # The probe where no rsync client can run (the Lambda runtime)
    daemon: RsyncDaemon = rsync_daemon(upstream)
    rsync_handshake(daemon.url, 5)
    with pytest.raises(ProbeFindingError, match="nosuchmodule"):
        rsync_handshake(daemon.url.replace("/mirror/", "/nosuchmodule/"), 5)


def test_an_rsync_module_that_is_not_served_is_down(rsync_daemon: Any, upstream: Path) -> None:
    daemon: RsyncDaemon = rsync_daemon(upstream)
    missing = probe_endpoint("rsync", daemon.url.replace("/mirror/", "/nosuchmodule/"), [], "", 5, 1)
    assert not missing.reachable and "nosuchmodule" in missing.results[0].detail
    assert assess_endpoint(missing, 0, 3600, 3600)[0].level is Level.DOWN


def test_a_closed_port_is_unreachable_on_every_protocol() -> None:
    port = free_port()
    for protocol, url in (("http", f"http://127.0.0.1:{port}/"), ("ftp", f"ftp://127.0.0.1:{port}/")):
        report = probe_endpoint(protocol, url, [], ".mirrorkeeper/trace", 5, 2)
        assert [r.outcome for r in report.results] == [Outcome.UNREACHABLE], protocol
        assert not report.reachable and report.missing_check is None


@contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections and never says a word (a hung front end)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_a_hung_server_times_out_within_the_probe_timeout() -> None:
    with silent_server() as port:
        for protocol in ("http", "ftp"):
            report = probe_endpoint(protocol, f"{protocol}://127.0.0.1:{port}/", [], "trace", 0.5, 1)
            result = report.results[0]
            assert result.outcome is Outcome.TIMEOUT, (protocol, result)
            assert result.latency_ms < 3000 and not report.reachable


def test_content_other_than_the_manifest_says_is_caught(
    s3: Any, endpoint: str, rsync_daemon: Any, upstream: Path
) -> None:
    # GIVEN a synced file served by both front ends
    write_file(upstream / "pool/a.rpm", b"real package\n", 1_700_000_000)
    daemon = rsync_daemon(upstream)
    assert run_cli(["sync", "--upstream", daemon.url, "--bucket", BUCKET], endpoint).returncode == 0
    digest = hashlib.sha256(b"real package\n").hexdigest()
    honest = SampleFile("pool/a.rpm", 13, 1_700_000_000, digest, "random", download=True)
    lies = [
        SampleFile("pool/a.rpm", 13, 1_700_000_000, "0" * 64, "random", download=True),  # another hash
        SampleFile("pool/a.rpm", 14, 1_700_000_000, None, "random"),  # another size
        SampleFile("pool/a.rpm", 13, 1_600_000_000, None, "random"),  # newer than the manifest: not stale
        SampleFile("pool/a.rpm", 13, 1_800_000_000, None, "random"),  # older copy served: stale
        SampleFile("pool/gone.rpm", 1, 1_700_000_000, None, "random"),  # not there at all
    ]
    with serve_cli("serve-http", endpoint) as http_port, serve_cli("serve-ftp", endpoint) as ftp_port:
        for protocol, port in (("http", http_port), ("ftp", ftp_port)):
            report = probe_endpoint(protocol, f"{protocol}://127.0.0.1:{port}/", [honest, *lies], "x", 5, 2)
            by_kind = [(r.kind, r.outcome) for r in report.results if r.kind in (ProbeKind.FILE, ProbeKind.DOWNLOAD)]
            assert by_kind.count((ProbeKind.DOWNLOAD, Outcome.OK)) == 1, (protocol, by_kind)
            assert (ProbeKind.DOWNLOAD, Outcome.WRONG_HASH) in by_kind, protocol
            outcomes = [o for k, o in by_kind if k is ProbeKind.FILE]
            assert outcomes == [
                Outcome.OK,
                Outcome.OK,
                Outcome.WRONG_SIZE,
                Outcome.WRONG_MTIME,
                Outcome.STALE,
                Outcome.WRONG_STATUS,
            ], protocol
            # the trace probe asked for a path that does not exist: unreadable, degraded
            findings = assess_endpoint(report, 1_700_000_000, 3600, 3600)
            assert {f.level for f in findings} == {Level.DEGRADED}, findings


def test_every_hostile_name_probes_clean_on_every_protocol(
    s3: Any, endpoint: str, rsync_daemon: Any, upstream: Path, tmp_path: Path
) -> None:
    # GIVEN a mirror of every hostile name (spaces, %, #, ?, +, unicode, leading dashes, ' -> ')
    add_hostile_names(upstream)
    daemon = rsync_daemon(upstream)
    assert run_cli(["sync", "--upstream", daemon.url, "--bucket", BUCKET], endpoint).returncode == 0
    store = StateStore(s3, MirrorLayout.create(BUCKET))
    with store.manifest_rows(store.manifest_key) as found:
        assert found is not None
        # every file, each also downloaded and hashed
        sample = choose_sample(found[1], (), 10_000, 0, 0, 10_000, 1 << 20, random.Random(1))
    assert len(sample) >= 2 * len(HOSTILE_NAMES)
    # WHEN every front end is probed for all of them
    with (
        serve_cli("serve-http", endpoint) as http_port,
        serve_cli("serve-ftp", endpoint) as ftp_port,
        serve_rsync(endpoint, tmp_path / "replica") as rsync,
    ):
        wait_until(lambda: served(rsync.port, tmp_path / "probe"), what="the replica")
        urls = {
            "http": f"http://127.0.0.1:{http_port}/",
            "ftp": f"ftp://127.0.0.1:{ftp_port}/",
            "rsync": f"rsync://127.0.0.1:{rsync.port}/mirror/",
        }
        for protocol, url in urls.items():
            report = probe_endpoint(protocol, url, sample, ".mirrorkeeper/trace", 10, 4)
            # THEN every probe passes: names reach the right object and the bytes are upstream's
            failed = [(r.kind.value, r.path, r.detail) for r in report.results if not r.ok]
            assert failed == [], (protocol, failed[:5])
            assert report.passed == 3 + 2 * len(sample)


def test_probes_of_many_mirrors_at_once_stay_within_the_servers_cap_and_wait_out_a_full_one(
    s3: Any, endpoint: str, rsync_daemon: Any, upstream: Path
) -> None:
    # GIVEN a synced mirror behind front ends that allow one address 16 connections (their default)
    for number in range(12):
        write_file(upstream / f"pool/p{number}.rpm", b"package %d\n" % number, 1_700_000_000)
    daemon = rsync_daemon(upstream)
    assert run_cli(["sync", "--upstream", daemon.url, "--bucket", BUCKET], endpoint).returncode == 0
    sample = [SampleFile(f"pool/p{n}.rpm", len(b"package %d\n" % n), 1_700_000_000, None, "random") for n in range(12)]
    with serve_cli("serve-http", endpoint) as http_port, serve_cli("serve-ftp", endpoint) as ftp_port:
        urls = {"http": f"http://127.0.0.1:{http_port}/", "ftp": f"ftp://127.0.0.1:{ftp_port}/"}
        # WHEN five mirrors' probes run at once, each wanting eight connections per protocol
        with ThreadPoolExecutor(10) as pool:
            reports = list(
                pool.map(
                    lambda protocol: probe_endpoint(protocol, urls[protocol], sample, ".mirrorkeeper/trace", 10, 8),
                    ["http", "ftp"] * 5,
                )
            )
        # THEN no probe was refused: this process held no more connections to a server than one
        # endpoint's probes would (8 HTTP, 4 FTP), not the 40 and 20 that would draw 503s and 421s
        failed = [(r.protocol, p.kind.value, p.detail) for r in reports for p in r.results if not p.ok]
        assert failed == []
        # AND an FTP server at its cap for our address (another client holds every session) is waited
        # out, as lftp does, not reported down
        holders = [ftplib.FTP() for _ in range(16)]
        for holder in holders:
            holder.connect("127.0.0.1", ftp_port, timeout=5)
        threading.Timer(1.0, lambda: [holder.close() for holder in holders]).start()
        waited = probe_endpoint("ftp", urls["ftp"], sample[:1], ".mirrorkeeper/trace", 10, 1)
        assert [p.detail for p in waited.results if not p.ok] == [] and waited.reachable
