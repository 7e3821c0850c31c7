"""``serve-http`` as a real server on loopback over the moto server, driven by http.client and raw sockets."""

import contextlib
import email.utils
import http.client
import json
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from mirrorkeeper.aws import RequestCounter, s3_client
from mirrorkeeper.config import AwsConfig
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.serve.http import MirrorHTTPServer
from mirrorkeeper.serve.served import ObjectCache, ServedTree, cache_lifetime
from tests.support import BUCKET, serve_cli, tree_files

REPO = Path(__file__).resolve().parents[2]
CASES = json.loads((REPO / "cloudfront" / "cases.json").read_text())["cases"]
Response = tuple[int, dict[str, str], bytes]


@contextmanager
def http_server(
    endpoint: str,
    prefix: str = "",
    max_connections: int = 32,
    cache: ObjectCache | None = None,
    counter: RequestCounter | None = None,
) -> Iterator[int]:
    """The HTTP front end in a thread of this process (so tests can size its limits and count its S3 requests)."""
    client = s3_client(AwsConfig(endpoint_url=endpoint, region="us-east-1"), counter)
    tree = ServedTree(client, MirrorLayout.create(BUCKET, prefix), cache)
    server = MirrorHTTPServer(
        ("127.0.0.1", 0),
        tree,
        max_connections=max_connections,
        max_connections_per_ip=max_connections,
        idle_timeout=5,
        header_timeout=5,
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def request(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None, source: str | None = None
) -> Response:
    """One request on a connection of its own, from loopback address ``source`` when given (127.0.0.2, ...)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None
    )
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def raw_request(port: int, target: str) -> Response:
    """Send ``target`` exactly as written (http.client would refuse or re-encode some of the table's)."""
    return _raw(port, f"GET {target} HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n".encode())


def _raw(port: int, sent: bytes) -> Response:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(sent)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def url(path: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in path.split("/"))


def put(s3: Any, key: str, body: bytes, mtime: int | None = 1_600_000_000, **extra: Any) -> None:
    metadata = {"mtime": str(mtime)} if mtime is not None else {}
    s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=metadata, **extra)


def test_table_requests_reach_the_key_cloudfront_would(s3: Any, endpoint: str) -> None:
    # GIVEN an object at every key the table says a request reaches (S3 refuses keys over its limit)
    for case in CASES:
        if case["status"] == 200 and len(("pub/" + case["path"]).encode()) <= 1024:
            put(s3, "pub/" + case["path"], f"object {case['path']!r}".encode())
    with http_server(endpoint) as port:
        for case in CASES:
            # WHEN the request is sent byte for byte
            status, headers, body = raw_request(port, case["request"])
            # THEN it is served from exactly that key, or refused with the table's status and a small page
            if case["status"] != 200:
                assert status == case["status"], case["name"]
                assert headers["content-type"].startswith("text/html") and len(body) < 1024, case["name"]
            elif len(("pub/" + case["path"]).encode()) > 1024:
                assert status == 404, case["name"]
            else:
                assert (status, body) == (200, f"object {case['path']!r}".encode()), case["name"]


def test_hostile_tree_is_served_byte_identical_by_the_cli_server(hostile_mirror: Path, endpoint: str) -> None:
    # GIVEN the hostile-name tree with an empty directory and symlinks, synced by the real CLI
    upstream = hostile_mirror
    with serve_cli("serve-http", endpoint) as port:
        # WHEN every upstream file is fetched over HTTP
        for rel, (content, mtime) in tree_files(upstream).items():
            status, headers, body = request(port, url(rel))
            # THEN the bytes and the upstream mtime come back exactly
            assert (status, body) == (200, content), rel
            assert email.utils.parsedate_to_datetime(headers["last-modified"]).timestamp() == mtime, rel
        assert request(port, "/v1/pkg.rpm")[1]["content-type"] == "application/x-rpm"
        # directories: the index page, a 301 without the slash, empty ones too; links redirect or serve content
        status, headers, body = request(port, "/")
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert b'href="with%20space.txt"' in body and b'href="empty%20dir/"' in body
        assert request(port, "/empty%20dir/")[0] == 200
        assert request(port, "/v1")[:2][0] == 301 and request(port, "/v1")[1]["location"] == "/v1/"
        assert request(port, "/nest%20ed")[1]["location"] == "/nest%20ed/"
        status, headers, _ = request(port, "/current")
        assert (status, headers["location"]) == (301, "/v1/")
        assert request(port, "/latest.rpm")[2] == b"rpm bytes"
        # private state is not reachable, missing paths are 404 with a small HTML page
        for path in ("/state/manifest.jsonl.gz", "/../state/manifest.jsonl.gz", "/%2e%2e/state/lock.json"):
            assert request(port, path)[0] in (400, 404), path
        status, headers, body = request(port, f"/missing-{secrets.token_hex(8)}")
        assert status == 404 and headers["content-type"].startswith("text/html") and b"Not Found" in body
        assert request(port, f"/missing-{secrets.token_hex(8)}/")[0] == 404


def test_ranges_resume_a_download_and_refuse_unsatisfiable_ones(s3: Any, endpoint: str) -> None:
    data = os.urandom(100_000)
    put(s3, "pub/big.iso", data)
    with http_server(endpoint) as port:
        # GIVEN half a download; WHEN resumed from where it stopped (wget -c / curl -C -)
        status, headers, first = request(port, "/big.iso", headers={"Range": "bytes=0-49999"})
        assert (status, headers["content-range"], len(first)) == (206, "bytes 0-49999/100000", 50_000)
        status, headers, rest = request(port, "/big.iso", headers={"Range": "bytes=50000-"})
        # THEN the two parts are the file
        assert status == 206 and headers["content-length"] == "50000" and first + rest == data
        assert request(port, "/big.iso", headers={"Range": "bytes=-10"})[2] == data[-10:]
        assert request(port, "/big.iso", headers={"Range": "bytes=99990-200000"})[2] == data[99990:]
        # unsatisfiable: 416 naming the size; several ranges: a clean 200; a stale If-Range: the whole file
        status, headers, _ = request(port, "/big.iso", headers={"Range": "bytes=100000-"})
        assert (status, headers["content-range"]) == (416, "bytes */100000")
        status, _, body = request(port, "/big.iso", headers={"Range": "bytes=0-1,5-6"})
        assert (status, body) == (200, data)
        status, _, body = request(port, "/big.iso", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
        assert (status, body) == (200, data)
        etag = request(port, "/big.iso", "HEAD")[1]["etag"]
        assert request(port, "/big.iso", headers={"Range": "bytes=0-9", "If-Range": etag})[2] == data[:10]
        assert request(port, "/big.iso", headers={"Range": "lines=1-2"})[0] == 200


def test_validators_and_conditional_requests(s3: Any, endpoint: str) -> None:
    put(s3, "pub/README", b"read me\n", 1_500_000_000, ContentType="text/plain; charset=utf-8")
    with http_server(endpoint) as port:
        status, headers, body = request(port, "/README")
        assert (status, body) == (200, b"read me\n")
        assert headers["last-modified"] == "Fri, 14 Jul 2017 02:40:00 GMT"  # the upstream mtime, not upload time
        assert headers["content-type"] == "text/plain; charset=utf-8" and headers["accept-ranges"] == "bytes"
        etag = headers["etag"]
        # WHEN revalidated THEN 304 without a body; a changed tag or an older date gets the file
        assert request(port, "/README", headers={"If-None-Match": etag})[:3:2] == (304, b"")
        assert request(port, "/README", headers={"If-None-Match": f'"x", {etag}'})[0] == 304
        assert request(port, "/README", headers={"If-Modified-Since": headers["last-modified"]})[0] == 304
        assert request(port, "/README", headers={"If-Modified-Since": "Thu, 13 Jul 2017 00:00:00 GMT"})[0] == 200
        # If-None-Match decides when both are sent (RFC 9110)
        both = {"If-None-Match": '"other"', "If-Modified-Since": headers["last-modified"]}
        assert request(port, "/README", headers=both)[0] == 200
        # HEAD: the same headers, no body
        status, head_headers, body = request(port, "/README", "HEAD")
        assert (status, body, head_headers["content-length"], head_headers["etag"]) == (200, b"", "8", etag)


def test_methods_other_than_get_and_head_are_405_and_change_nothing(s3: Any, endpoint: str) -> None:
    put(s3, "pub/file.txt", b"unchanged")
    with http_server(endpoint) as port:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "MKCOL"):
            status, headers, _ = request(port, "/file.txt", method)
            assert (status, headers["allow"]) == (405, "GET, HEAD"), method
    assert s3.get_object(Bucket=BUCKET, Key="pub/file.txt")["Body"].read() == b"unchanged"


def test_private_state_under_a_prefix_is_never_reachable(s3: Any, endpoint: str) -> None:
    # GIVEN a mirror under a prefix, its state beside the served tree
    secret = b"private lock"
    for key in ("mirrors/x/state/lock.json", "mirrors/x/state/manifest.jsonl.gz"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=secret)
    put(s3, "mirrors/x/pub/", b"<html>root</html>")
    attempts = [
        "/../state/lock.json",
        "/%2e%2e/state/lock.json",
        "/..%2fstate/lock.json",
        "/%2E%2E%2Fstate%2Flock.json",
        "//../state/lock.json",
        "/./../state/lock.json",
        "/state/lock.json",
        "/../../mirrors/x/state/lock.json",
        "/%00/../state/lock.json",
        "/" + "../" * 300 + "state/lock.json",
    ]
    with http_server(endpoint, prefix="mirrors/x") as port:
        assert request(port, "/")[2] == b"<html>root</html>"
        for target in attempts:
            # WHEN any spelling of a way out is requested THEN it is refused or missing, never the state
            status, _, body = raw_request(port, target)
            assert status in (400, 404, 414) and secret not in body, target


def test_large_files_stream_in_bounded_memory(s3: Any, endpoint: str) -> None:
    # GIVEN a 96 MiB file (the moto server holds it in this process, the HTTP server is a subprocess)
    size = 96 * 1024 * 1024
    s3.upload_fileobj(_Zeros(size), BUCKET, "pub/big.bin")
    with serve_cli("serve-http", endpoint) as port:
        pid = _listener_pid(port)
        before = _peak_rss_kib(pid)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/big.bin")
        response = connection.getresponse()
        received = 0
        while chunk := response.read(1 << 20):
            received += len(chunk)
        connection.close()
        # THEN all of it arrived while the server's peak memory grew by far less than the file
        assert received == size
        assert _peak_rss_kib(pid) - before < 32 * 1024


def test_connections_over_the_cap_get_503_and_slots_come_back(s3: Any, endpoint: str) -> None:
    put(s3, "pub/a", b"a")
    with http_server(endpoint, max_connections=2) as port:
        # GIVEN two keep-alive connections holding both slots
        held = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(2)]
        for connection in held:
            connection.request("GET", "/a")
            assert connection.getresponse().read() == b"a"
        # WHEN a third client connects THEN it is told to come back, at once
        status, headers, _ = request(port, "/a")
        assert (status, headers["retry-after"]) == (503, "1")
        # and once a connection closes its slot serves the next client
        held[0].close()
        deadline = time.monotonic() + 5
        while request(port, "/a")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        held[1].close()


def test_every_answer_carries_the_sandbox_csp_so_upstream_pages_cannot_script_the_mirror(
    s3: Any, endpoint: str
) -> None:
    # GIVEN upstream HTML and SVG with scripts in them, and an index page of ours
    put(s3, "pub/evil.html", b"<script>document.title='pwned'</script>", ContentType="text/html")
    put(s3, "pub/evil.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    put(s3, "pub/dir/", b"<html>index</html>", ContentType="text/html; charset=utf-8")
    with http_server(endpoint) as port:
        etag = request(port, "/evil.html")[1]["etag"]
        answers = {
            "html": request(port, "/evil.html"),
            "svg": request(port, "/evil.svg"),
            "index": request(port, "/dir/"),
            "not modified": request(port, "/evil.html", headers={"If-None-Match": etag}),
            "missing": request(port, "/missing.html"),
            "refused path": raw_request(port, "/%2e%2e/x.html"),
            "too many headers": _raw(port, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n"),
        }
    # THEN each says so, whatever produced it: scripts in it never run as the mirror's origin
    assert {what: status for what, (status, _, _) in answers.items()} == {
        "html": 200,
        "svg": 200,
        "index": 200,
        "not modified": 304,
        "missing": 404,
        "refused path": 400,
        "too many headers": 431,
    }
    for what, (_, headers, _) in answers.items():
        assert headers.get("content-security-policy") == "sandbox allow-downloads", what
        assert headers.get("server") == "mirrorkeeper", what  # no trailing space, no Python version


@pytest.mark.parametrize(
    ("headers", "status", "served"),
    [
        ({"Range": "bytes=" + "9" * 5000 + "-"}, 416, None),  # past any end, not a traceback
        ({"Range": "bytes=" + "0" * 5000 + "5-"}, 206, b"56789"),  # leading zeros are still 5
        ({"Range": "bytes=2-" + "9" * 5000}, 206, b"23456789"),
        ({"Range": "bytes=-" + "9" * 5000}, 206, b"0123456789"),
        ({"Range": "bytes=" + ",".join(["0-0"] * 15_000)}, 200, b"0123456789"),  # 60 KB of ranges: the file
        ({"Range": "bytes=-0"}, 416, None),
        ({"If-Modified-Since": "Fri, 14 Jul 99999999999999999999 02:40:00 GMT"}, 200, b"0123456789"),
        ({"If-Modified-Since": "Mon, 01 Jan 2100 00:00:" + "9" * 30 + " GMT"}, 200, b"0123456789"),
        ({"If-Modified-Since": "Mon, 01 Jan 2100 00:00:00 +" + "9" * 30}, 200, b"0123456789"),
        ({"If-Modified-Since": "9" * 60_000}, 200, b"0123456789"),
        ({"If-Modified-Since": "Mon, 01 Jan 2100 00:00:00 -0000"}, 304, b""),  # no zone: read as UTC
        ({"Range": "bytes=0-1", "If-Range": "Fri, 14 Jul 99999999999999999999 02:40:00 GMT"}, 200, b"0123456789"),
        ({"Content-Length": "9" * 5000}, 200, b"0123456789"),  # a body we never read: answered, then closed
        ({"Content-Length": "-1"}, 400, None),
        ({"Content-Length": "0x10"}, 400, None),
        ({"Content-Length": "5, 6"}, 400, None),
    ],
)
def test_numbers_in_headers_are_bounded_and_answered_as_rfc_9110_says(
    s3: Any, endpoint: str, headers: dict[str, str], status: int, served: bytes | None
) -> None:
    put(s3, "pub/digits", b"0123456789")
    with http_server(endpoint) as port:
        answer = request(port, "/digits", headers=headers)
        assert answer[0] == status
        if served is not None:
            assert answer[2] == served
        assert request(port, "/digits")[2] == b"0123456789"  # and the server is still serving


def test_a_request_announcing_a_body_is_answered_and_its_connection_closed(s3: Any, endpoint: str) -> None:
    # GIVEN a GET whose "body" is a second request, on a keep-alive connection
    put(s3, "pub/a", b"public")
    put(s3, "pub/b", b"should not be answered")
    smuggled = b"GET /b HTTP/1.1\r\nHost: mirror\r\n\r\n"
    with http_server(endpoint) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"GET /a HTTP/1.1\r\nHost: mirror\r\nExpect: 100-continue\r\nContent-Length: {len(smuggled)}\r\n\r\n"
        sock.sendall(head.encode() + smuggled)
        received = _read_until_closed(sock)
    # THEN /a is answered at once (no 100 Continue inviting the body), and the body is never read
    # as a request: the connection closes after the one answer
    assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"public")
    assert received.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in received


def test_a_client_sending_its_headers_too_slowly_is_cut_off_at_the_header_deadline(s3: Any, endpoint: str) -> None:
    put(s3, "pub/a", b"a")
    with serve_cli("serve-http", endpoint, "--header-timeout", "1", "--idle-timeout", "60") as port:
        # GIVEN a client that connects and sends nothing
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            started = time.monotonic()
            # THEN it is disconnected at the header deadline, long before the idle timeout
            assert _read_until_closed(silent) == b""
            assert 0.9 < time.monotonic() - started < 30
        # GIVEN a client that trickles a header byte every 0.2 s: each read is quick, their sum is not
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"GET /a HTTP/1.1\r\nHost: mirror\r\n")
            # THEN it is disconnected too, unanswered, after a few of them
            assert _trickle_until_closed(slow) in range(4, 30)
        # GIVEN a keep-alive connection idle for longer than the header deadline between requests
        with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
            response = http.client.HTTPResponse(kept)
            kept.sendall(b"GET /a HTTP/1.1\r\nHost: mirror\r\n\r\n")
            response.begin()
            assert response.read() == b"a"
            time.sleep(1.5)
            # THEN its next request is served: the deadline starts at a request's first byte
            kept.sendall(b"GET /a HTTP/1.1\r\nHost: mirror\r\n\r\n")
            response = http.client.HTTPResponse(kept)
            response.begin()
            assert response.read() == b"a"
            # AND a request after that trickled in is cut off like the first one would be
            kept.sendall(b"GET /a HTTP/1.1\r\n")
            assert _trickle_until_closed(kept) in range(4, 30)


def test_a_client_resetting_its_connection_mid_request_costs_no_traceback(
    s3: Any, endpoint: str, capfd: pytest.CaptureFixture[str]
) -> None:
    put(s3, "pub/a", b"a")
    with http_server(endpoint, max_connections=1) as port:
        # GIVEN a client that resets its connection halfway through its headers
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /a HTTP/1.1\r\nHost: mir")
            time.sleep(0.1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # WHEN the server is done with it (its only slot serves the next client)
        deadline = time.monotonic() + 10
        while request(port, "/a")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # THEN nothing was printed about it
    assert "Traceback" not in capfd.readouterr().err


def test_one_client_address_holds_at_most_its_cap_of_connections(s3: Any, endpoint: str) -> None:
    put(s3, "pub/a", b"a")
    cap = ("--max-connections-per-ip", "2", "--header-timeout", "60")
    with serve_cli("serve-http", endpoint, *cap) as port:
        # GIVEN 127.0.0.2 holding two connections, sending nothing
        held = [_connect_from("127.0.0.2", port) for _ in range(2)]
        # WHEN it opens a third THEN that one is told to come back, at once; another address is served
        status, headers, _ = request(port, "/a", source="127.0.0.2")
        assert (status, headers["retry-after"]) == (503, "1")
        assert request(port, "/a", source="127.0.0.3")[0] == 200
        # AND once one of its connections closes, it is served again
        held.pop().close()
        deadline = time.monotonic() + 10
        while request(port, "/a", source="127.0.0.2")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for sock in held:
            sock.close()


def test_slow_clients_holding_connections_do_not_keep_another_client_waiting(s3: Any, endpoint: str) -> None:
    put(s3, "pub/a", b"a")
    limits = ("--max-connections-per-ip", "2", "--max-connections", "32", "--header-timeout", "60")
    with serve_cli("serve-http", endpoint, *limits) as port:
        # GIVEN eight clients (127.0.0.2 to .9), each holding its cap of two connections and
        # trickling header bytes into them
        slow = [_connect_from(f"127.0.0.{n}", port) for n in range(2, 10) for _ in range(2)]
        for sock in slow:
            sock.sendall(b"GET /a HTTP/1.1\r\n")
        stop = threading.Event()

        def trickle() -> None:
            for _ in range(240):  # at most a minute
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X")
                if stop.wait(0.25):
                    return

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            # WHEN another client asks for files
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            answers = []
            for _ in range(20):
                connection.request("GET", "/a")
                answers.append(connection.getresponse().read())
            connection.close()
        finally:
            stop.set()
            trickler.join(10)
        # THEN it got every answer while all sixteen slow connections were still held open
        assert answers == [b"a"] * 20
        assert [_still_open(sock) for sock in slow] == [True] * 16
        for sock in slow:
            sock.close()


class _Clock:
    """A clock the test moves by hand, so cache expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("cache_control", "lifetime"),
    [
        (None, 10.0),
        ("no-cache, max-age=0", 0.0),  # the trace file
        ("public, max-age=60", 10.0),  # index pages: capped at the TTL
        ("public, max-age=3", 3.0),
        ("max-age=60, s-maxage=2", 2.0),  # a shared cache's own directive wins
        ("private", 0.0),
        ("no-store", 0.0),
        ("max-age=soon", 0.0),
    ],
)
def test_cache_lifetime_honours_cache_control_within_the_ttl(cache_control: str | None, lifetime: float) -> None:
    assert cache_lifetime(cache_control, 10.0) == lifetime
    assert cache_lifetime(cache_control, 0.0) == 0.0  # --cache-ttl 0: nothing is ever reused


def test_cached_objects_are_reused_until_they_expire_and_the_trace_never_is(s3: Any, endpoint: str) -> None:
    # GIVEN a data file (no Cache-Control), an index page (max-age=60) and the trace file (no-cache)
    put(s3, "pub/data.bin", b"old data")
    put(s3, "pub/dir/", b"<html>old index</html>", CacheControl="public, max-age=60")
    put(s3, "pub/.mirrorkeeper/trace", b"old trace", CacheControl="no-cache, max-age=0")
    clock, counter = _Clock(), RequestCounter()
    paths = ("/data.bin", "/dir/", "/.mirrorkeeper/trace")
    with http_server(endpoint, cache=ObjectCache(10.0, clock=clock), counter=counter) as port:
        assert [request(port, p)[2] for p in paths] == [b"old data", b"<html>old index</html>", b"old trace"]
        # WHEN a sync replaces all three
        put(s3, "pub/data.bin", b"new data")
        put(s3, "pub/dir/", b"<html>new index</html>", CacheControl="public, max-age=60")
        put(s3, "pub/.mirrorkeeper/trace", b"new trace", CacheControl="no-cache, max-age=0")
        counter.by_operation.clear()
        # THEN until the new trace is read, the rest is reused within the TTL (no S3 request)
        assert request(port, "/data.bin")[2] == b"old data"
        assert request(port, "/dir/")[2] == b"<html>old index</html>"
        assert request(port, "/data.bin", headers={"Range": "bytes=4-6"})[:3:2] == (206, b"dat")  # from memory too
        assert counter.by_operation == {}
        # the trace is always read from S3, and a changed trace empties the cache at once
        assert request(port, "/.mirrorkeeper/trace")[2] == b"new trace"
        assert [request(port, p)[2] for p in paths] == [b"new data", b"<html>new index</html>", b"new trace"]
        # without a new trace, entries expire after the TTL
        put(s3, "pub/data.bin", b"newer data")
        assert request(port, "/data.bin")[2] == b"new data"
        clock.now += 10.5
        assert request(port, "/data.bin")[2] == b"newer data"
        # a missing file is never remembered: once it exists it is served
        assert request(port, "/late.txt")[0] == 404
        put(s3, "pub/late.txt", b"here now")
        assert request(port, "/late.txt")[2] == b"here now"


def test_a_resumed_download_of_a_replaced_file_never_splices_versions(s3: Any, endpoint: str) -> None:
    # GIVEN a file too big to cache whole, whose metadata the cache remembers
    first, second = os.urandom(1_500_000), os.urandom(1_500_000)
    put(s3, "pub/big.iso", first)
    with http_server(endpoint, cache=ObjectCache(60.0)) as port:
        assert request(port, "/big.iso", "HEAD")[0] == 200
        # WHEN it is replaced and a client resumes with a range
        put(s3, "pub/big.iso", second)
        status, headers, body = request(port, "/big.iso", headers={"Range": "bytes=1000000-"})
        # THEN the bytes and the validators are all of the new version (S3's 412 made the server look again)
        assert (status, body) == (206, second[1_000_000:])
        assert headers["etag"] == s3.head_object(Bucket=BUCKET, Key="pub/big.iso")["ETag"]


class _Zeros:
    """A file-like object of ``size`` zero bytes that never exists in memory whole."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, amount: int = -1) -> bytes:
        amount = self.left if amount < 0 else min(amount, self.left)
        self.left -= amount
        return bytes(amount)


def _listener_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (the serve-http subprocess)."""
    inode = ""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inode = fields[9]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(os.readlink(fd) == f"socket:[{inode}]" for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
            except OSError:
                continue
    pytest.fail(f"no process listens on port {port}")


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _connect_from(source: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def _still_open(sock: socket.socket) -> bool:
    """True while the server has neither answered nor closed the connection."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
    finally:
        sock.settimeout(10)
    return False


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closing)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open; it sent {received!r}") from None
        if not chunk:
            return received
        received += chunk


def _trickle_until_closed(sock: socket.socket) -> int:
    """Send one header byte every 0.2 s until the server closes the connection (at most 30 s); the bytes sent."""
    sent = 0
    while sent < 150 and _still_open(sock):
        with contextlib.suppress(OSError):  # the server may close between the check and the send
            sock.sendall(b"X")
        sent += 1
        time.sleep(0.2)
    assert _read_until_closed(sock) == b"", "the server answered a request whose headers never ended"
    return sent
