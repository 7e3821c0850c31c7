"""``serve-ftp`` as a real server on loopback over the moto server, driven by ftplib."""

import ftplib
import io
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper.aws import RequestCounter, s3_client
from mirrorkeeper.commands.serve_ftp import keep_on_one_cpu
from mirrorkeeper.config import AwsConfig
from mirrorkeeper.content import render_index
from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.serve.ftp import RETR_CHUNK, make_server
from mirrorkeeper.serve.served import ObjectCache, ServedTree
from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import write_file
from tests.support import BUCKET, free_port_range, run_cli, serve_cli, tree_files, tree_shape


@contextmanager
def ftp_server(
    endpoint: str, counter: RequestCounter | None = None, cache_ttl: float | None = None, **options: Any
) -> Iterator[int]:
    """The FTP front end in a thread of this process (so tests can count its S3 requests and size its limits);
    with the object cache the CLI has when ``cache_ttl`` is given."""
    client = s3_client(AwsConfig(endpoint_url=endpoint, region="us-east-1"), counter)
    tree = ServedTree(client, MirrorLayout.create(BUCKET), ObjectCache(cache_ttl) if cache_ttl else None)
    server = make_server(tree, ("127.0.0.1", 0), "test-mirror", **options)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        server.close_all()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server.address[1]
    finally:
        stop.set()
        thread.join(10)


@contextmanager
def session(port: int, user: str = "anonymous", source: str | None = None) -> Iterator[ftplib.FTP]:
    """A logged-in session, from loopback address ``source`` when given (127.0.0.2, ...)."""
    ftp = ftplib.FTP(timeout=10, encoding="utf-8", source_address=(source, 0) if source else None)
    ftp.connect("127.0.0.1", port)
    ftp.login(user, "mirror-test@example.org")
    try:
        yield ftp
    finally:
        ftp.close()


def retr(ftp: ftplib.FTP, path: str, rest: int | None = None) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {path}", out.write, rest=rest)
    return out.getvalue()


def put(s3: Any, key: str, body: bytes, mtime: int = 1_600_000_000, **metadata: str) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata={"mtime": str(mtime), **metadata})


def test_hostile_tree_is_served_byte_identical_by_the_cli_server(hostile_mirror: Path, endpoint: str) -> None:
    # GIVEN the hostile-name tree with an empty directory and symlinks, synced by the real CLI
    upstream = hostile_mirror
    with serve_cli("serve-ftp", endpoint, "--mirror-name", "hostile") as port, session(port) as ftp:
        assert "hostile mirror" in ftp.getwelcome()
        # WHEN every upstream file is fetched, sized and dated over FTP
        for rel, (content, mtime) in tree_files(upstream).items():
            # THEN the bytes, the size and the upstream mtime come back exactly
            assert retr(ftp, "/" + rel) == content, rel
            assert ftp.size("/" + rel) == len(content), rel
            assert ftp.sendcmd(f"MDTM /{rel}") == "213 " + time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime)), rel
        # listings show every name (index pages never), directories as directories, upstream times
        names = set(ftp.nlst("/"))
        assert {"with space.txt", " leading space", "-leading-dash", "empty dir", "nest ed", "v1"} <= names
        assert not any(name == "" or name.endswith("/") for name in names)
        facts = dict(ftp.mlsd("/v1"))
        assert facts["pkg.rpm"]["type"] == "file" and facts["pkg.rpm"]["modify"] == "20200913122640"
        assert dict(ftp.mlsd("/"))["nest ed"]["type"] == "dir"
        lines: list[str] = []
        ftp.retrlines("LIST /", lines.append)
        assert any(line.startswith("drwx") and line.endswith(" empty dir") for line in lines)
        assert any(line.startswith("lrwx") and line.endswith(" current -> v1") for line in lines)
        assert list(ftp.mlsd("/empty dir")) == []
        # a directory symlink is entered as its target; a file symlink is its target's bytes
        ftp.cwd("/current")
        assert ftp.pwd() == "/v1" and ftp.nlst() == ["pkg.rpm"]
        assert retr(ftp, "/latest.rpm") == b"rpm bytes"


def test_lftp_mirrors_the_whole_root_as_upstream_plus_our_public_files(
    hostile_mirror: Path, rsync_daemon: Callable[[Path], RsyncDaemon], s3: Any, endpoint: str, tmp_path: Path
) -> None:
    lftp = shutil.which("lftp")
    if lftp is None:
        pytest.fail("lftp not found on PATH: `make install` installs it (Debian package lftp); never skipped")
    # GIVEN the hostile-name tree and a directory that lftp enters before .mirrorkeeper (it sorts
    # first), synced by the real CLI; then a real verify run, which probes FTP and publishes the status page
    upstream = hostile_mirror
    write_file(upstream / "+early/file", b"early", 1_600_000_000)
    synced = run_cli(["sync", "--upstream", rsync_daemon(upstream).url, "--bucket", BUCKET], endpoint)
    assert synced.returncode == 0, synced.stderr
    with serve_cli("serve-ftp", endpoint) as port:
        verified = run_cli(["verify", "--bucket", BUCKET, "--ftp-url", f"ftp://127.0.0.1:{port}/"], endpoint)
        assert verified.returncode == 0, verified.stderr
        assert {"state/health.json", "pub/.mirrorkeeper/status.html"} <= {
            item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]
        }
        # WHEN lftp mirrors the whole root
        local = tmp_path / "copy"
        script = (
            "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; "
            f"open -u anonymous,mirror-test@example.org ftp://127.0.0.1:{port}; mirror --verbose / {local}"
        )
        mirrored = subprocess.run([lftp, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    # THEN it got upstream's tree, and of ours exactly the files that are public over HTTP too
    assert (mirrored.returncode, mirrored.stderr) == (0, ""), mirrored.stdout
    public = [f".mirrorkeeper/{name}" for name in ("trace", "timestamp", "status.html", "status.json")]
    ours = {
        path: s3.get_object(Bucket=BUCKET, Key=f"pub/{path}")["Body"].read()
        for path in (*public, f"project/trace/{BUCKET}")
    }
    copied, upstream_files = tree_files(local), tree_files(upstream)
    assert {path: content for path, (content, _) in copied.items()} == {
        path: content for path, (content, _) in upstream_files.items()
    } | ours
    assert all(copied[path] == found for path, found in upstream_files.items())  # with upstream's mtimes
    directories = {".mirrorkeeper": "dir", "project": "dir", "project/trace": "dir"}
    assert tree_shape(local) == tree_shape(upstream) | directories | dict.fromkeys(ours, "file")


def test_resumed_downloads_start_at_the_rest_offset(s3: Any, endpoint: str) -> None:
    data = os.urandom(300_000)
    put(s3, "pub/big.iso", data)
    with ftp_server(endpoint) as port, session(port) as ftp:
        # GIVEN half a download; WHEN resumed with REST THEN the rest of the file comes back
        first = retr(ftp, "big.iso")[:123_457]
        assert first + retr(ftp, "big.iso", rest=123_457) == data
        assert retr(ftp, "big.iso", rest=len(data)) == b""
        with pytest.raises(ftplib.error_perm, match=r"^554"):
            retr(ftp, "big.iso", rest=len(data) + 1)


def test_rest_in_the_middle_of_a_file_of_several_s3_reads_sends_the_right_bytes(s3: Any, endpoint: str) -> None:
    # GIVEN a file spanning several of the server's reads from S3, different everywhere
    data = os.urandom(3 * RETR_CHUNK + 12_345)
    put(s3, "pub/big.iso", data)
    with ftp_server(endpoint, cache_ttl=10) as port, session(port) as ftp:
        # WHEN downloads resume inside the second read, on a read's edge and in the last partial one
        for offset in (RETR_CHUNK + 777, 2 * RETR_CHUNK, 3 * RETR_CHUNK + 1):
            # THEN exactly the bytes from there to the end come back
            assert retr(ftp, "/big.iso", rest=offset) == data[offset:], offset
        assert retr(ftp, "/big.iso") == data


def test_a_file_added_after_a_listing_shows_once_the_cache_expires(s3: Any, endpoint: str) -> None:
    put(s3, "pub/dir/", b"<html></html>")
    put(s3, "pub/dir/old.txt", b"old")
    with ftp_server(endpoint, cache_ttl=1.0) as port, session(port) as ftp:
        # GIVEN a listing, and the index page behind it in the cache
        assert ftp.nlst("/dir") == ["old.txt"]
        # WHEN the sync adds a file, and the cache's time is up
        put(s3, "pub/dir/new.txt", b"new file")
        time.sleep(1.2)
        # THEN it is listed, sized and served
        assert ftp.nlst("/dir") == ["new.txt", "old.txt"]
        ftp.voidcmd("TYPE I")  # SIZE is refused in ASCII mode, which NLST set
        assert ftp.size("/dir/new.txt") == len(b"new file")
        assert retr(ftp, "/dir/new.txt") == b"new file"


def test_a_file_replaced_after_it_was_listed_is_sent_whole_at_its_new_length(s3: Any, endpoint: str) -> None:
    put(s3, "pub/grows.txt", b"short")
    put(s3, "pub/shrinks.txt", b"a long first version " * 100)
    with ftp_server(endpoint, cache_ttl=10) as port, session(port) as ftp:
        # GIVEN the sizes a lookup showed (and the cache still holds)
        ftp.voidcmd("TYPE I")
        assert ftp.size("/grows.txt") == 5 and ftp.size("/shrinks.txt") == 2100
        # WHEN a sync replaces both files before they are fetched
        longer, shorter = b"a much longer second version " * 400, b"short now"
        put(s3, "pub/grows.txt", longer)
        put(s3, "pub/shrinks.txt", shorter)
        # THEN each is sent whole, as it is now: never cut at, or padded to, the old length
        assert retr(ftp, "/grows.txt") == longer
        assert retr(ftp, "/shrinks.txt") == shorter


def test_a_file_replaced_while_it_is_sent_is_never_spliced(s3: Any, endpoint: str) -> None:
    # GIVEN a download that has received its first bytes of a file of several S3 reads
    old = b"o" * (3 * RETR_CHUNK)
    put(s3, "pub/moving.iso", old)
    with ftp_server(endpoint, cache_ttl=10) as port, session(port) as ftp:
        ftp.voidcmd("TYPE I")
        connection = ftp.transfercmd("RETR /moving.iso")
        received = bytearray(connection.recv(65536))
        # WHEN a sync replaces the file mid-transfer
        put(s3, "pub/moving.iso", b"n" * (3 * RETR_CHUNK))
        while chunk := connection.recv(1 << 20):
            received += chunk
        connection.close()
        # THEN the client got the old version whole or a failed transfer, never a mix of both
        try:
            ftp.voidresp()
            assert bytes(received) == old
        except ftplib.error_temp:
            assert b"n" not in received


def test_missing_paths_are_550(s3: Any, endpoint: str) -> None:
    put(s3, "pub/dir/", b"<html></html>")
    with ftp_server(endpoint) as port, session(port) as ftp:
        missing = f"/missing-{secrets.token_hex(8)}"
        for command in (f"SIZE {missing}", f"MDTM {missing}", f"CWD {missing}", "SIZE /dir", "MDTM /dir"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.sendcmd(command)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            retr(ftp, missing)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.retrlines(f"LIST {missing}", lambda line: None)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            retr(ftp, "/dir")  # a directory is not a file


def test_every_write_command_is_refused_and_changes_nothing(s3: Any, endpoint: str) -> None:
    put(s3, "pub/keep.txt", b"keep")
    before = s3.list_objects_v2(Bucket=BUCKET)["KeyCount"]
    with ftp_server(endpoint) as port, session(port) as ftp:
        refused = [
            "DELE keep.txt",
            "MKD new",
            "RMD keep.txt",
            "RNFR keep.txt",
            "RNTO other.txt",
            "SITE CHMOD 777 keep.txt",
        ]
        for command in refused:
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.sendcmd(command)
        for command in ("STOR new.txt", "APPE keep.txt", "STOU"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.storbinary(command, io.BytesIO(b"data"))
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == before
    assert s3.get_object(Bucket=BUCKET, Key="pub/keep.txt")["Body"].read() == b"keep"


def test_only_anonymous_and_ftp_log_in(s3: Any, endpoint: str) -> None:
    with ftp_server(endpoint) as port:
        for user in ("anonymous", "ftp"):
            with session(port, user) as ftp:
                assert ftp.pwd() == "/"
        with pytest.raises(ftplib.error_perm, match=r"^530"), session(port, "root"):
            pass


def test_our_public_files_are_entered_listed_and_fetched_and_nothing_leaves_the_served_tree(
    s3: Any, endpoint: str
) -> None:
    # GIVEN private state beside the served tree, and our public files, under a directory that, like
    # the sync and the status page leave it, has no marker object
    s3.put_object(Bucket=BUCKET, Key="state/lock.json", Body=b"private")
    put(s3, "pub/README", b"public")
    ours = {"trace": b"trace", "status.html": b"<html></html>", "status.json": b"{}"}
    for name, body in ours.items():
        put(s3, f"pub/.mirrorkeeper/{name}", body)
    with ftp_server(endpoint) as port, session(port) as ftp:
        # WHEN a fresh session enters it by any path, before listing anything
        for path in ("/.mirrorkeeper", "/.mirrorkeeper/", ".mirrorkeeper", "/./.mirrorkeeper/."):
            ftp.cwd("/")
            ftp.cwd(path)
            # THEN it is a directory whose files are listed and served
            assert ftp.pwd() == "/.mirrorkeeper", path
        assert sorted(ftp.nlst()) == sorted(ours)
        assert {name: facts["type"] for name, facts in ftp.mlsd("/.mirrorkeeper")} == dict.fromkeys(ours, "file")
        assert {name: retr(ftp, name) for name in ours} == ours
        for missing in ("CWD /.mirrorkeeper/trace", "CWD /.mirrorkeeper/nothing", "SIZE /.mirrorkeeper/nothing"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.sendcmd(missing)
        # AND climbing out in every spelling stops at the root, where state is missing
        for climb in ("..", "../..", "/..", "../../..", "/.mirrorkeeper/../..", ".mirrorkeeper/../../.."):
            ftp.cwd("/.mirrorkeeper")
            ftp.cwd(climb)
            assert ftp.pwd() == "/", climb
            assert "state" not in ftp.nlst()
        ftp.cwd("/.mirrorkeeper")
        for path in (
            "../state/lock.json",
            "/../state/lock.json",
            "/..//../state/lock.json",
            "state/lock.json",
            ".mirrorkeeper/../../state/lock.json",
            "/.mirrorkeeper/../../../state/lock.json",
            "../../state/lock.json",
        ):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                retr(ftp, path)
        for path in ("../state", "/../state", ".mirrorkeeper/../../state", "/.mirrorkeeper/../../state"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.cwd(path)
        assert retr(ftp, "../README") == retr(ftp, "/../README") == b"public"


def test_a_listing_costs_one_list_request_not_one_per_entry(s3: Any, endpoint: str) -> None:
    # GIVEN a directory of 60 files and 5 subdirectories, with its index page, as the sync writes them
    children = [Entry(f"many/f{n:02d}", EntryType.FILE, n, 1_600_000_000 + n) for n in range(60)]
    children += [Entry(f"many/d{n}", EntryType.DIR, 0, 1_500_000_000) for n in range(5)]
    for child in children:
        put(s3, f"pub/{child.path}" + ("/" if child.type is EntryType.DIR else ""), b"x" * child.size, child.mtime)
    put(s3, "pub/many/", render_index("many", children, "test-mirror"))
    counter = RequestCounter()
    with ftp_server(endpoint, counter) as port, session(port) as ftp:
        ftp.cwd("/many")
        for listing in ("MLSD", "LIST", "NLST"):
            counter.by_operation.clear()
            # WHEN the directory is listed
            lines: list[str] = []
            ftp.retrlines(listing, lines.append)
            # THEN it took one ListObjectsV2 and a constant number of other requests
            assert len(lines) == 65, listing
            assert counter.by_operation.get("ListObjectsV2") == 1, listing
            assert sum(counter.by_operation.values()) <= 4, (listing, counter.by_operation)
        # and the times are upstream's, from the index page, not the upload times
        facts = dict(ftp.mlsd())
        assert facts["f59"]["modify"] == "20200913122739" and facts["d0"]["modify"] == "20170714024000"


def test_passive_range_masquerade_banner_and_connection_limits(s3: Any, endpoint: str) -> None:
    put(s3, "pub/a", b"a")
    low = free_port()
    options = {"passive_ports": (low, low + 2), "masquerade_address": "127.0.0.9", "max_connections_per_ip": 2}
    with ftp_server(endpoint, **options) as port, session(port) as ftp:
        assert "test-mirror mirror" in ftp.getwelcome()
        # PASV announces the masquerade address and a port from the range; EPSV works too
        announced = re.search(r"\((\d+(?:,\d+){5})\)", ftp.sendcmd("PASV"))
        assert announced is not None
        numbers = [int(n) for n in announced.group(1).split(",")]
        assert numbers[:4] == [127, 0, 0, 9] and low <= numbers[4] * 256 + numbers[5] <= low + 2
        assert ftp.sendcmd("EPSV").startswith("229")
        with session(port):
            # WHEN a third session comes from the same address THEN it is turned away
            third = ftplib.FTP(timeout=10)
            with pytest.raises(ftplib.error_temp, match=r"^421"):
                third.connect("127.0.0.1", port)
            third.close()


def test_a_passive_request_finding_every_port_held_is_refused_and_never_sent_outside_the_range(
    s3: Any, endpoint: str
) -> None:
    put(s3, "pub/a", b"a file")
    low, high = free_port_range(2)
    # Clients come from 127.0.0.2 and up: 127.0.0.1 is where serve_cli checked that the server listens.
    with (
        serve_cli("serve-ftp", endpoint, "--passive-ports", f"{low}-{high}") as port,
        session(port, source="127.0.0.2") as first,
        session(port, source="127.0.0.3") as second,
    ):
        # GIVEN two clients whose PASV holds each of the two ports (nobody connects to them yet)
        held = [passive_port(first.sendcmd("PASV")), passive_port(second.sendcmd("PASV"))]
        assert sorted(held) == [low, high]
        # AND the default cap: one session per client address, fewer than the two ports
        with pytest.raises(ftplib.error_temp, match=r"^421"), session(port, source="127.0.0.2"):
            pass
        with session(port, source="127.0.0.4") as third:
            # WHEN a third client asks for a data port THEN it is refused, never given one outside the range
            for command in ("PASV", "EPSV"):
                with pytest.raises(ftplib.error_temp, match=r"^425 ") as refused:
                    third.sendcmd(command)
                assert not re.search(r"\d{4}", str(refused.value)), refused.value
            # AND once a client connects to its port, that port takes the next client
            first.voidcmd("TYPE I")
            with socket.create_connection(("127.0.0.1", held[0]), 10, ("127.0.0.2", 0)) as data:
                assert first.sendcmd("RETR /a").startswith("1")
                assert data.makefile("rb").read() == b"a file"
            first.voidresp()
            assert passive_port(third.sendcmd("EPSV")) == held[0]
        assert retr(second, "/a") == b"a file"  # asking again frees its own port first


def passive_port(reply: str) -> int:
    """The port a 227 (h1,h2,h3,h4,p1,p2) or 229 (|||port|) reply names."""
    if reply.startswith("227"):
        numbers = re.search(r"\((\d+(?:,\d+){5})\)", reply)
        assert numbers is not None, reply
        high, low = numbers.group(1).split(",")[4:]
        return int(high) * 256 + int(low)
    extended = re.search(r"\(\|\|\|(\d+)\|\)", reply)
    assert reply.startswith("229") and extended is not None, reply
    return int(extended.group(1))


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (
            ["--passive-ports", "60000-60001", "--max-connections-per-ip", "3"],
            ["--max-connections-per-ip 3", "2 ports"],
        ),
        (
            ["--passive-ports", "60000-60015", "--max-connections-per-ip", "16"],
            ["--max-connections-per-ip", "60000-60015"],
        ),
        (["--passive-ports", "60000-60000"], ["--passive-ports 60000-60000"]),
    ],
)
def test_a_per_address_cap_not_below_the_passive_ports_is_a_usage_error(options: list[str], named: list[str]) -> None:
    # WHEN serve-ftp is given a per-address cap that would let one client hold every passive port
    result = run_cli(["serve-ftp", "--bucket", BUCKET, *options], "http://127.0.0.1:9")
    # THEN it refuses to start: one line naming both settings, and exit 2
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(words in result.stderr for words in named), result.stderr


def test_a_directory_of_more_than_a_thousand_entries_is_listed_whole_from_one_paginated_listing(
    s3: Any, endpoint: str
) -> None:
    # GIVEN 1,005 files and 3 subdirectories in one directory: more than one ListObjectsV2 page (1,000 keys)
    children = [Entry(f"huge/f{n:04d}", EntryType.FILE, 1, 1_600_000_000 + n) for n in range(1005)]
    children += [Entry(f"huge/sub{n}", EntryType.DIR, 0, 1_500_000_000) for n in range(3)]
    with ThreadPoolExecutor(8) as pool:
        keys = [f"pub/{c.path}" + ("/" if c.type is EntryType.DIR else "") for c in children]
        list(pool.map(lambda key: put(s3, key, b"x" if not key.endswith("/") else b""), keys))
    put(s3, "pub/huge/", render_index("huge", children, "test-mirror"))
    expected = {c.path.removeprefix("huge/") for c in children}
    counter = RequestCounter()
    with ftp_server(endpoint, counter) as port, session(port) as ftp:
        for listing in ("NLST", "LIST", "MLSD"):
            counter.by_operation.clear()
            # WHEN the directory is listed
            lines: list[str] = []
            ftp.retrlines(f"{listing} /huge", lines.append)
            # THEN every entry is there, once
            names = [_listed_name(listing, line) for line in lines]
            assert sorted(names) == sorted(expected), listing
            # from one listing that S3 paginated (2 pages), plus a constant number of other requests
            assert counter.by_operation.get("ListObjectsV2") == 2, (listing, counter.by_operation)
            assert sum(counter.by_operation.values()) <= 5, (listing, counter.by_operation)
        # the last page's entries carry their upstream times too
        assert dict(ftp.mlsd("/huge"))["f1004"]["modify"] == time.strftime("%Y%m%d%H%M%S", time.gmtime(1_600_001_004))


def test_an_idle_session_is_disconnected_after_the_idle_timeout(s3: Any, endpoint: str) -> None:
    put(s3, "pub/a", b"a")
    with serve_cli("serve-ftp", endpoint, "--idle-timeout", "1") as port, session(port) as idle, session(port) as busy:
        # GIVEN one session that keeps talking and one that says nothing
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            assert busy.voidcmd("NOOP").startswith("200")
            time.sleep(0.25)
        # THEN the quiet one was told why and disconnected; the busy one is still served
        with pytest.raises(ftplib.error_temp, match=r"^421"):
            idle.getresp()
        assert idle.sock.recv(1) == b""
        assert retr(busy, "/a") == b"a"


def test_the_trace_is_fresh_through_both_front_ends_right_after_a_sync(
    upstream: Path, rsync_daemon: Callable[[Path], RsyncDaemon], s3: Any, endpoint: str
) -> None:
    # GIVEN a synced mirror served by both CLI servers with their default cache, the trace read through each
    write_file(upstream / "README", b"first", 1_600_000_000)
    daemon = rsync_daemon(upstream)
    sync = ["sync", "--upstream", daemon.url, "--bucket", BUCKET]
    assert run_cli(sync, endpoint).returncode == 0
    trace = "/.mirrorkeeper/trace"
    with serve_cli("serve-ftp", endpoint) as ftp_port, serve_cli("serve-http", endpoint) as http_port:
        with session(ftp_port) as ftp:
            before = retr(ftp, trace)
        assert urllib.request.urlopen(f"http://127.0.0.1:{http_port}{trace}", timeout=10).read() == before
        # WHEN the next sync publishes a new trace
        write_file(upstream / "README", b"second", 1_600_000_100)
        assert run_cli(sync, endpoint).returncode == 0
        now = s3.get_object(Bucket=BUCKET, Key="pub" + trace)["Body"].read()
        assert now != before
        # THEN a probe right after it reads the new one through both front ends
        with session(ftp_port) as ftp:
            assert retr(ftp, trace) == now
        assert urllib.request.urlopen(f"http://127.0.0.1:{http_port}{trace}", timeout=10).read() == now


def _listed_name(listing: str, line: str) -> str:
    if listing == "MLSD":
        return line.split(" ", 1)[1]  # "type=file;size=1;... NAME"
    if listing == "LIST":
        return line.split(maxsplit=8)[8]  # "-rw-r--r--   1 ftp ftp SIZE Mon DD HH:MM NAME"
    return line


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_server_threads_stay_on_one_cpu() -> None:
    # GIVEN a thread standing for the server's main thread (affinity is per thread on Linux, so the
    # test process itself is left alone)
    seen: dict[str, set[int]] = {}

    def server_thread() -> None:
        # WHEN it pins itself, then starts a session thread
        keep_on_one_cpu()
        seen["server"] = os.sched_getaffinity(0)
        session_thread = threading.Thread(target=lambda: seen.setdefault("session", os.sched_getaffinity(0)))
        session_thread.start()
        session_thread.join()

    allowed = os.sched_getaffinity(0)
    thread = threading.Thread(target=server_thread)
    thread.start()
    thread.join()
    # THEN both run on one of the CPUs the process may use (all of them when there is only one)
    assert seen["server"] <= allowed
    assert len(seen["server"]) == 1
    assert seen["session"] == seen["server"]
    assert os.sched_getaffinity(0) == allowed
