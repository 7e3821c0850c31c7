"""``serve-http``: the mirror over HTTP with the semantics CloudFront + S3 + ``cloudfront/function.js`` give.

One thread per connection (S3 calls block), at most ``max_connections`` at once: the next one
gets a 503 straight away instead of queueing behind slow downloads. Bodies are streamed from S3
in chunks, so a 5 GB file costs 64 KiB of memory.

::

    request ─▶ route (function.js twin: 400/414) ─▶ GET|HEAD? (else 405)
      ─▶ directory URL: the marker object's index page
      ─▶ file URL: the object; missing but a directory → 301 /dir/; a directory symlink → 301
      ─▶ conditionals (If-None-Match, If-Modified-Since → 304) ─▶ Range (206 / 416 / clean 200)

Slow and greedy clients: a request's line and headers must arrive within ``header_timeout`` (a
socket timeout alone bounds each read, not their sum, so a client trickling a byte at a time would
keep its thread forever); one client holds at most ``max_connections_per_ip`` connections; every
number read from a header is bounded before it is used.
"""

import contextlib
import email.utils
import html
import io
import ipaddress
import logging
import re
import socket
import threading
import time
from datetime import UTC
from typing import Any
from urllib.parse import quote

from mirrorkeeper.errors import StorageError
from mirrorkeeper.serve.routing import route
from mirrorkeeper.serve.served import ObjectBody, ObjectChangedError, ObjectInfo, ServedTree
from mirrorkeeper.sockets import DualStackHTTPServer, NamedRequestHandler

log = logging.getLogger(__name__)

ALLOWED = "GET, HEAD"
# Upstream's HTML and SVG are served from the mirror's own origin; without this a script in them
# would run as the mirror (read its pages, script its status page). The sandbox stops scripts,
# forms and plugins and gives the document an origin of its own, but still applies CSS, so the
# index pages and the status page look the same; allow-downloads keeps a link on an index page
# downloading its file. Sent on every response, as CloudFront sends it (template.yaml): a browser
# may render a type we did not think of as a document.
CONTENT_SECURITY_POLICY = "sandbox allow-downloads"
_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
# No object is 10**19 bytes (S3's limit is 5 TB): a longer byte position is past any end. int()
# refuses strings over 4,300 digits, so without the cap a long one would be a traceback, not a 416.
_POSITION_DIGITS = 19
_HTTP_DATE_CHARS = 64  # an HTTP-date is 29 characters; anything much longer is not one
_DECIMAL = re.compile(r"[0-9]+")
_REASONS = {
    301: "Moved Permanently",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_NEEDS_LOOK_FIRST = ("Range", "If-None-Match", "If-Modified-Since")
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class MirrorHTTPServer(DualStackHTTPServer):
    # A backlog as deep as the cap: bursts of new connections wait in the kernel, not in threads.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        tree: ServedTree,
        *,
        max_connections: int,
        max_connections_per_ip: int,
        idle_timeout: float,
        header_timeout: float,
    ) -> None:
        self.tree = tree
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self._max_connections = max_connections
        self._max_per_client = max_connections_per_ip
        self._lock = threading.Lock()
        self._open = 0
        self._by_client: dict[str, int] = {}  # open connections by client_key, none at 0
        super().__init__(address, MirrorRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        client = client_key(client_address[0])
        with self._lock:
            held = self._by_client.get(client, 0)
            admitted = self._open < self._max_connections and held < self._max_per_client
            if admitted:
                self._open += 1
                self._by_client[client] = held + 1
        if not admitted:
            with contextlib.suppress(OSError):  # it may already be gone; either way we are done with it
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            client = client_key(client_address[0])
            with self._lock:
                self._open -= 1
                if self._by_client[client] == 1:
                    del self._by_client[client]
                else:
                    self._by_client[client] -= 1


def client_key(host: str) -> str:
    """Whose connection this is, for the per-client cap: the IPv4 address (also when a dual-stack
    socket shows it as ::ffff:a.b.c.d), or the IPv6 /64, since one IPv6 host is routinely handed
    a whole /64 and could otherwise take the cap again from each of its addresses."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address), 64), strict=False))


class _HeaderDeadline(io.RawIOBase):
    """The connection's incoming bytes, with a deadline while a request's line and headers arrive.

    Each read gets only the time left before the deadline, so a client sending a byte every few
    seconds is cut off like one sending nothing. Without a deadline running (between requests)
    reads wait up to the idle timeout.
    """

    def __init__(self, connection: socket.socket, idle_timeout: float) -> None:
        super().__init__()
        self._connection = connection
        self._idle_timeout = idle_timeout
        self._until: float | None = None

    @property
    def running(self) -> bool:
        return self._until is not None

    def start(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds

    def stop(self) -> None:
        self._until = None
        self._connection.settimeout(self._idle_timeout)  # the response's writes get the idle timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._until is None:
            self._connection.settimeout(self._idle_timeout)
        else:
            left = self._until - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request's headers did not arrive in time")
            self._connection.settimeout(left)
        return self._connection.recv_into(buffer)


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """One RFC 9110 byte range as an inclusive (first, last) pair clipped to ``size``, in a list.

    None means "ignore the header" (not a bytes range, malformed, or several ranges: RFC 9110
    lets a server send the whole file instead, and download tools ask for one); [] means
    unsatisfiable. The work is bounded by the header's length whatever it holds.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec or "," in spec:
        return None
    match = _RANGE.match(spec)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix: the last N bytes
        length = _position(last, size)
        return [(max(size - length, 0), size - 1)] if length > 0 and size > 0 else []
    start = _position(first, size)
    if start >= size:
        return []
    end = _position(last, size) if last else size - 1
    if end < start:
        return None
    return [(start, min(end, size - 1))]


def _position(digits: str, size: int) -> int:
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= _POSITION_DIGITS else size


def http_date(text: str) -> float | None:
    """Seconds since the epoch of an HTTP-date, or None for anything else (RFC 9110 has such a
    header ignored). A date without a zone is read as UTC, as every HTTP-date is."""
    if len(text) > _HTTP_DATE_CHARS:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(text)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    except (TypeError, ValueError, OverflowError):  # OverflowError: a year or zone of twenty digits
        return None


class MirrorRequestHandler(NamedRequestHandler):
    server: MirrorHTTPServer

    # Headers and body go out in separate writes; with Nagle on, the body of a small keep-alive
    # response waits for the client's delayed ACK of the headers (40 ms on Linux) on every request.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self._reading = _HeaderDeadline(self.connection, self.server.idle_timeout)
        self.rfile.close()  # the socket's own reader: every read goes through the deadline instead
        self.rfile = self._buffered = io.BufferedReader(self._reading)
        # The first request's clock starts at the connection: one that never sends a byte holds a
        # slot no longer than one that sends too slowly.
        self._reading.start(self.server.header_timeout)

    def handle_one_request(self) -> None:
        if not self._reading.running:
            # A later request's clock starts at its first byte; until then the connection is an
            # idle keep-alive one, which the idle timeout closes.
            try:
                if not self._buffered.peek(1):
                    self.close_connection = True
                    return
            except (ConnectionError, TimeoutError):
                self.close_connection = True
                return
            self._reading.start(self.server.header_timeout)
        super().handle_one_request()

    def parse_request(self) -> bool:
        try:
            if not super().parse_request():
                return False
        finally:
            self._reading.stop()
        if self.command not in ("GET", "HEAD"):
            self.close_connection = True  # we never read the body it may have sent
            self._page(405, "This mirror is read-only.", {"Allow": ALLOWED})
            return False
        body = self._announces_body()
        if body is None:
            self.close_connection = True  # RFC 9112 6.3: framing we cannot trust ends the connection
            self._page(400, "The request's Content-Length is not a valid length.")
            return False
        if body:
            # A GET's body means nothing and is never read; closing after the answer is what keeps
            # its bytes from being read as the next request.
            self.close_connection = True
        return True

    def handle_expect_100(self) -> bool:
        return True  # no 100 Continue: it would invite a body that is never read

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        super().end_headers()

    def _finish_headers(self) -> None:
        # RFC 9112 9.6: an answer after which the connection closes says so, so the client does not reuse it.
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server dispatches by this name
        self._serve()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server dispatches by this name
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.INFO):  # one line per request: skip the formatting when nobody reads it
            log.info("http %s", format % args, extra={"client": self.client_address[0]})

    # -- serving ------------------------------------------------------------------------------

    def _serve(self) -> None:
        target = route(self.path)
        if not target.ok:
            self._page(target.status, "That path cannot name a file of this mirror.")
            return
        try:
            if target.is_directory:
                self._serve_directory(target.path.rstrip("/"))
            else:
                self._serve_file(target.path)
        except StorageError as exc:
            log.error("storage failed", extra={"path": self.path, "error": str(exc)})
            self._page(502, "The mirror's storage did not answer; try again shortly.")

    def _serve_directory(self, path: str) -> None:
        key = self.server.tree.dir_key(path)
        opened, info = self._look(key)
        if info is None:
            self._page(404, "No such directory on this mirror.")
            return
        self._answer(key, info, opened, ranged=False)

    def _serve_file(self, path: str) -> None:
        tree = self.server.tree
        key = tree.file_key(path)
        opened, info = self._look(key)
        if info is None:
            if tree.is_dir(path):
                self._redirect(path + "/")
            else:
                self._page(404, "No such file or directory on this mirror.")
            return
        if info.symlink_target is not None:
            # A directory symlink is stored as a redirect page; answer it as the redirect it means.
            resolved = tree.resolve_link(path, info.symlink_target)
            if resolved is not None and tree.is_dir(resolved):
                if opened is not None:
                    opened.close()
                self._redirect(resolved + "/" if resolved else "")
                return
        self._answer(key, info, opened, ranged=True)

    def _announces_body(self) -> bool | None:
        """Whether the request says a body follows it; None when its Content-Length is not one
        decimal length (a list of equal ones is allowed, RFC 9110 8.6)."""
        if "Transfer-Encoding" in self.headers:
            return True
        lengths = {part.strip() for value in self.headers.get_all("Content-Length", []) for part in value.split(",")}
        if not lengths:
            return False
        if len(lengths) > 1 or not _DECIMAL.fullmatch(length := lengths.pop()):
            return None
        return length.lstrip("0") != ""

    def _look(self, key: str) -> tuple[ObjectBody | None, ObjectInfo | None]:
        """A plain GET opens the object at once (one S3 request); HEAD, conditional and range
        requests look first, because the answer may need no body or only part of it."""
        if self.command == "GET" and not any(self.headers.get(h) for h in _NEEDS_LOOK_FIRST):
            opened = self.server.tree.get(key)
            return opened, opened.info if opened is not None else None
        return None, self.server.tree.head(key)

    def _answer(
        self, key: str, info: ObjectInfo, opened: ObjectBody | None, ranged: bool, retried: bool = False
    ) -> None:
        if opened is not None:
            self._stream(opened, info, None)
            return
        if self._not_modified(info):
            self.send_response(304)
            self._validators(info)
            self.send_header("Content-Length", "0")
            self._finish_headers()
            return
        wanted = self._wanted_range(info) if ranged else None
        if wanted == []:
            self._page(416, "The requested range is outside the file.", {"Content-Range": f"bytes */{info.size}"})
            return
        byte_range = wanted[0] if wanted else None
        if self.command == "HEAD":
            self._start(info, byte_range)
            return
        # If-Match pins the version we just looked at: a resumed download never splices two versions.
        try:
            body = self.server.tree.get(key, byte_range, if_match=info.etag)
        except ObjectChangedError:
            if retried:
                raise
            # Replaced since we looked (or since the cache remembered it): answer from the new version.
            fresh = self.server.tree.head(key)
            if fresh is None:
                self._page(404, "No such file or directory on this mirror.")
            else:
                self._answer(key, fresh, None, ranged, retried=True)
            return
        if body is None:  # deleted between the look and the GET: it is missing now
            self._page(404, "No such file or directory on this mirror.")
            return
        self._stream(body, info, byte_range)

    def _stream(self, body: ObjectBody, info: ObjectInfo, byte_range: tuple[int, int] | None) -> None:
        try:
            self._start(info, byte_range)
            for chunk in body.chunks():
                self.wfile.write(chunk)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away mid-download: nothing to answer
        finally:
            body.close()

    def _start(self, info: ObjectInfo, byte_range: tuple[int, int] | None) -> None:
        if byte_range is None:
            self.send_response(200)
            length = info.size
        else:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {byte_range[0]}-{byte_range[1]}/{info.size}")
            length = byte_range[1] - byte_range[0] + 1
        self.send_header("Content-Type", info.content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if info.cache_control:
            self.send_header("Cache-Control", info.cache_control)
        self._validators(info)
        self._finish_headers()

    def _validators(self, info: ObjectInfo) -> None:
        self.send_header("ETag", info.etag)
        self.send_header("Last-Modified", email.utils.formatdate(info.mtime, usegmt=True))

    def _not_modified(self, info: ObjectInfo) -> bool:
        # RFC 9110 13.2.2: If-None-Match decides when present; If-Modified-Since only without it.
        none_match = self.headers.get("If-None-Match")
        if none_match is not None:
            tags = [t.strip().removeprefix("W/") for t in none_match.split(",")]
            return "*" in tags or info.etag in tags
        since = self.headers.get("If-Modified-Since")
        stamp = http_date(since) if since is not None else None
        return stamp is not None and info.mtime <= stamp

    def _wanted_range(self, info: ObjectInfo) -> list[tuple[int, int]] | None:
        header = self.headers.get("Range")
        if header is None or not self._if_range_holds(info):
            return None
        return parse_range(header, info.size)

    def _if_range_holds(self, info: ObjectInfo) -> bool:
        condition = self.headers.get("If-Range")
        if condition is None:
            return True
        if condition.strip().startswith(('"', "W/")):
            return condition.strip() == info.etag
        stamp = http_date(condition)
        return stamp is not None and int(stamp) == info.mtime

    # -- small answers ------------------------------------------------------------------------

    def _redirect(self, path: str) -> None:
        location = "/" + "/".join(quote(part, safe="") for part in path.split("/"))
        self._page(301, f"Moved to {location}", {"Location": location})

    def _page(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        reason = _REASONS.get(status, "Error")
        body = (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{status} {reason}</title></head>'
            f"<body><h1>{reason}</h1><p>{html.escape(text)}</p></body></html>\n"
        ).encode()
        self.send_response(status, reason)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._finish_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
