"""status.html opened in a real headless Chromium (Debian's ``chromium``, installed by ``make
install``): what the browser parses (``--dump-dom``) and what it paints (``--screenshot``); then
the mirror's pages and upstream's, and a host's front page, as ``serve-http`` sends them, under its
CSP sandbox, with clicks driven over the DevTools pipe where a dump is not enough.

Chromium only ever loads loopback: the page from a file or a server on 127.0.0.1, and every other
request goes to a proxy address where nothing listens, so a stray fetch fails instead of leaving
the machine.
"""

import http.server
import json
import os
import re
import select
import shutil
import struct
import subprocess
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper.content import INDEX_CONTENT_TYPE, render_index
from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.serve.http import CONTENT_SECURITY_POLICY
from mirrorkeeper.state import STATUS_HTML_PATH, HealthState, HistoryPoint, ProtocolStatus, SyncOutcome
from mirrorkeeper.verify.health import HISTORY_SECONDS
from mirrorkeeper.verify.status import BAR_HEIGHT, BAR_WIDTH, COLOURS, render_status_html
from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import debian_like, openvz_like
from tests.support import BUCKET, run_cli, serve_cli

NOW = 1_780_000_000.0 + 1234
HOUR = 3600.0
HOSTILE_NAME = "<script>document.title='pwned'</script> Mirror & \"Co\""
WINDOW = (1000, 420)  # the heading and the protocol table; a small image keeps the PNG decoding quick
OK = bytes.fromhex(COLOURS["ok"][1:])
DOWN = bytes.fromhex(COLOURS["down"][1:])
TRACK = bytes.fromhex("eeeeee")  # the bar's empty track
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr"}  # Chromium closes SVG elements: <rect></rect>


def constructed_state() -> HealthState:
    """http fresh (trace 30 min old) and ok; ftp 10 h stale and down; 14 days of half-hourly
    checks with a down stretch of five hours."""
    history = []
    for i in range(14 * 48):
        t = NOW - HISTORY_SECONDS + 60 + i * 1800
        overall = "down" if 301 <= i < 311 else "ok"  # 03:18 to 07:48 UTC: five hours
        history.append(HistoryPoint(t, overall, {"http": "ok", "ftp": overall}, {"http": 1800.0, "ftp": None}, 100.0))
    return HealthState(
        levels={"http": "ok", "ftp": "down", "mirror": "ok", "overall": "down"},
        since={"overall": NOW - 4 * HOUR},
        last_sync=SyncOutcome(NOW - 1800, True, 0, "synced", "run-report", duration=245.0, files_changed=12),
        checked_at=NOW - 30,
        protocols={
            "http": ProtocolStatus("http://127.0.0.1:1/pub/", "ok", int(NOW - 1800), 14, 0, True, 41.7, []),
            "ftp": ProtocolStatus(
                "ftp://127.0.0.1:1/", "down", int(NOW - 10 * HOUR), 10, 2, False, 120.0, ["stale: <b>10.0 h</b>"]
            ),
        },
        completion=100.0,
        drift=0,
        lag=0,
        history=history,
    )


# -- driving the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium not found on PATH: `make install` installs it from Debian packages "
            "(apt-get install chromium); this test needs a real browser and is never skipped",
            pytrace=False,
        )
    return path


def browser_flags(workdir: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
        "--disable-gpu",
        f"--user-data-dir={workdir / 'profile'}",  # a fresh profile: parallel workers never share one
        "--no-first-run",
        "--disable-background-networking",
        "--proxy-server=http://127.0.0.1:9",  # nothing listens there; loopback itself bypasses proxies
        "--hide-scrollbars",
        "--force-device-scale-factor=1",  # one CSS pixel = one image pixel, so widths can be measured
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ]


def open_in_chromium(chromium: str, url: str, workdir: Path) -> tuple[str, bytes]:
    """Load ``url`` once; return the DOM after parsing and a screenshot (PNG) of the window."""
    shot = workdir / "shot.png"
    command = [chromium, *browser_flags(workdir), f"--screenshot={shot}", "--dump-dom", url]
    result = subprocess.run(command, capture_output=True, timeout=60, check=False)
    errors = result.stderr.decode(errors="replace")[-2000:]
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {errors}"
    assert shot.exists(), f"chromium wrote no screenshot: {errors}"
    return result.stdout.decode(), shot.read_bytes()


class DevTools:
    """Chromium driven over its DevTools pipe, for what ``--dump-dom`` cannot do (click a link):
    commands go in on the browser's fd 3, replies and events come out on fd 4, each JSON message
    ending in a NUL byte (``--remote-debugging-pipe``)."""

    def __init__(self, chromium: str, workdir: Path) -> None:
        commands_in, self._commands = os.pipe()
        self._replies, replies_out = os.pipe()
        # bash (dash takes fds 0-9 only) puts the pipe ends where the browser looks for them, then becomes it.
        remap = f'exec "$0" "$@" 3<&{commands_in} 4>&{replies_out} {commands_in}<&- {replies_out}>&-'
        self._process = subprocess.Popen(
            ["bash", "-c", remap, chromium, *browser_flags(workdir), "--remote-debugging-pipe", "about:blank"],
            pass_fds=(commands_in, replies_out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_in)
        os.close(replies_out)
        self._buffer = b""
        self._received: list[dict[str, Any]] = []
        self._last_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._last_id += 1
        sent = {"id": self._last_id, "method": method, "params": params or {}}
        if session is not None:
            sent["sessionId"] = session
        os.write(self._commands, json.dumps(sent).encode() + b"\0")
        number = self._last_id
        reply = self.wait_for(lambda message: message.get("id") == number)
        assert reply is not None and "error" not in reply, (method, reply)
        result: dict[str, Any] = reply["result"]
        return result

    def wait_for(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 20.0, since: int = 0
    ) -> dict[str, Any] | None:
        """The first message so far (from the ``since``-th on), or arriving within ``timeout``
        seconds, that is ``wanted``."""
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            for message in self._received[seen:]:
                if wanted(message):
                    return message
            seen = len(self._received)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                return None
            chunk = os.read(self._replies, 1 << 16)
            assert chunk, "the browser closed its DevTools pipe"
            *complete, self._buffer = (self._buffer + chunk).split(b"\0")
            self._received += [json.loads(raw) for raw in complete]

    def open_tab(self) -> str:
        """A new tab, attached with page events on; returns its session."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session: str = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        return session

    def navigate(self, session: str, url: str) -> None:
        """Load ``url`` in the tab, until its load event."""
        self.until_loaded(session, lambda: self.call("Page.navigate", {"url": url}, session))

    def until_loaded(self, session: str, action: Callable[[], object]) -> None:
        """Do ``action`` and wait for the page it loads in the tab to fire its load event."""
        before = len(self._received)
        action()
        loaded = self.wait_for(
            lambda message: message.get("method") == "Page.loadEventFired" and message.get("sessionId") == session,
            since=before,
        )
        assert loaded is not None, "the page never finished loading"

    def click(self, session: str, selector: str) -> None:
        """A left click in the middle of the first element ``selector`` finds in the tab's document."""
        document = self.call("DOM.getDocument", session=session)["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": document, "selector": selector}, session)["nodeId"]
        assert node, f"nothing matches {selector}"
        quad = self.call("DOM.getContentQuads", {"nodeId": node}, session)["quads"][0]
        for kind in ("mousePressed", "mouseReleased"):
            click = {
                "type": kind,
                "x": sum(quad[0::2]) / 4,
                "y": sum(quad[1::2]) / 4,
                "button": "left",
                "clickCount": 1,
            }
            self.call("Input.dispatchMouseEvent", click, session)

    def location(self, session: str) -> str:
        history = self.call("Page.getNavigationHistory", session=session)
        return str(history["entries"][history["currentIndex"]]["url"])

    def close(self) -> None:
        try:
            os.write(self._commands, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self._process.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait(10)
        finally:
            os.close(self._commands)
            os.close(self._replies)


@pytest.fixture
def page_dir(tmp_path: Path) -> Path:
    (tmp_path / "status.html").write_bytes(render_status_html(constructed_state(), HOSTILE_NAME, HOUR, NOW))
    return tmp_path


@pytest.fixture
def strict_csp_server(page_dir: Path) -> Iterator[str]:
    """Serves ``page_dir`` on 127.0.0.1 with the strictest CSP a CDN might add: no inline CSS."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(page_dir), **kwargs)

        def end_headers(self) -> None:
            self.send_header("Content-Security-Policy", "default-src 'none'")
            super().end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/status.html"
    server.shutdown()
    server.server_close()


# -- reading what it produced ---------------------------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list["Node"] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def walk(self) -> Iterator["Node"]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, tag: str, **attrs: str) -> list["Node"]:
        return [n for n in self.walk() if n.tag == tag and all(n.attrs.get(k) == v for k, v in attrs.items())]

    def content(self) -> str:
        return "".join(self.text) + "".join(child.content() for child in self.children)


class TreeBuilder(HTMLParser):
    """The browser's serialised DOM as a tree (Chromium writes well-formed markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if any(node.tag == tag for node in self.stack[1:]):
            while self.stack.pop().tag != tag:
                pass

    def handle_data(self, data: str) -> None:
        self.stack[-1].text.append(data)


def dom_of(markup: str) -> Node:
    builder = TreeBuilder()
    builder.feed(markup)
    builder.close()
    return builder.root


def decode_png(data: bytes) -> list[bytes]:
    """The RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes); no image
    library is among the dev dependencies, and this is all the test needs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, compressed = 8, b""
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG format {body!r}"
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            compressed += body
    raw, stride = zlib.decompress(compressed), width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        # Undo the per-row filter (PNG spec, section 9); "up" is the common one and is done in bulk.
        if kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind in (1, 3, 4):
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                if kind == 1:
                    line[i] = (line[i] + left) & 0xFF
                elif kind == 3:
                    line[i] = (line[i] + (left + previous[i]) // 2) & 0xFF
                else:
                    up, corner = previous[i], previous[i - channels] if i >= channels else 0
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        previous = line
        rows.append(bytes(line) if channels == 3 else b"".join(line[i : i + 3] for i in range(0, stride, 4)))
    return rows


def runs(row: bytes, rgb: bytes) -> list[tuple[int, int]]:
    """(start x, length) of every horizontal run of exactly this colour in one RGB row."""
    pattern = re.compile(b"(?:" + re.escape(rgb) + b")+")
    return [(m.start() // 3, len(m.group()) // 3) for m in pattern.finditer(row) if m.start() % 3 == 0]


def bar_before_track(rows: list[bytes], rgb: bytes) -> int:
    """The longest run of ``rgb`` that the bar's empty grey track directly follows: an age bar, not
    a badge or a history cell of the same colour."""
    return max(
        (
            length
            for row in rows
            for x, length in runs(row, rgb)
            if row[3 * (x + length) : 3 * (x + length + 1)] == TRACK
        ),
        default=0,
    )


def pixels_of(rows: list[bytes], rgb: bytes) -> int:
    return sum(length for row in rows for _, length in runs(row, rgb))


# -- the tests ------------------------------------------------------------------------------------


def test_chromium_shows_protocol_rows_bars_and_history(chromium: str, page_dir: Path) -> None:
    # GIVEN the page for one ok and one down protocol and 14 days of history, as a local file
    url = (page_dir / "status.html").as_uri()
    # WHEN Chromium loads it
    markup, png = open_in_chromium(chromium, url, page_dir)
    dom = dom_of(markup)
    # THEN the hostile mirror name is text in the heading, and nothing from it became an element
    assert dom.find("span", id="mirror-name")[0].content() == HOSTILE_NAME
    assert dom.find("script") == []
    assert dom.find("title")[0].content().startswith(HOSTILE_NAME)
    # AND each protocol row shows its level, its trace age in words and a bar as wide as that age
    rows = dom.find("tr", **{"class": "protocol"})
    shown = [
        (
            row.attrs["data-protocol"],
            row.find("span", **{"class": f"badge {row.attrs['data-level']}"})[0].content(),
            row.find("td", **{"class": "num age"})[0].content(),
            row.find("rect", **{"class": "age"})[0].attrs["width"],
        )
        for row in rows
    ]
    assert shown == [("http", "ok", "30 min", "15.0"), ("ftp", "down", "10.0 h", "240.0")]
    assert dom.find("b") == []  # the reason "<b>10.0 h</b>" stayed text
    # AND the history has one titled cell per hour of the 14 days, five of them down
    cells = [n for n in dom.find("table", id="history")[0].walk() if n.tag == "span" and "title" in n.attrs]
    assert len(cells) == 14 * 24 + 1
    assert sum(n.attrs["class"] == "c down" for n in cells) == 5
    # AND the painted bars have those widths in the level colours: 30 min of an 8 h scale is 15 px
    # in green, 10 h fills all 240 px in red
    pixels = decode_png(png)
    assert abs(bar_before_track(pixels, OK) - 15) <= 1
    assert max(length for row in pixels for _, length in runs(row, DOWN)) in range(BAR_WIDTH - 1, BAR_WIDTH + 2)


def test_bars_survive_a_csp_that_forbids_inline_css(chromium: str, page_dir: Path, strict_csp_server: str) -> None:
    # GIVEN the page served over loopback with "Content-Security-Policy: default-src 'none'"
    # WHEN Chromium loads it
    markup, png = open_in_chromium(chromium, strict_csp_server, page_dir)
    pixels = decode_png(png)
    # THEN the data is all there
    assert [n.attrs["data-level"] for n in dom_of(markup).find("tr", **{"class": "protocol"})] == ["ok", "down"]
    # AND the inline stylesheet really was blocked: the only red left is the down bar itself
    # (no red badge, no red history cells), which is drawn by SVG attributes, not CSS
    assert abs(pixels_of(pixels, DOWN) - BAR_WIDTH * BAR_HEIGHT) <= 2 * BAR_HEIGHT
    assert abs(bar_before_track(pixels, OK) - 15) <= 1


# -- the mirror's pages and upstream's, as serve-http sends them -------------------------------------

DOWNLOAD = bytes(range(256)) * 8
EVIL_HTML = (
    b'<!DOCTYPE html><html><head><meta charset="utf-8"><title>upstream</title></head><body>'
    b'<p id="said">upstream text</p><script>document.title = "pwned";'
    b'document.getElementById("said").textContent = "scripted";</script></body></html>'
)
EVIL_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect width="40" height="40" fill="#0a0"/>'
    b'<script>document.documentElement.setAttribute("data-pwned", "yes")</script></svg>'
)


@pytest.fixture
def served_pages(s3: Any, endpoint: str) -> Iterator[str]:
    """``serve-http`` over the status page, an index page with a file, and upstream HTML and SVG
    that carry scripts; yields its base URL."""
    pages = {
        STATUS_HTML_PATH: (render_status_html(constructed_state(), HOSTILE_NAME, HOUR, NOW), INDEX_CONTENT_TYPE),
        "dir/": (
            render_index("dir", [Entry("dir/file.bin", EntryType.FILE, len(DOWNLOAD), 1_600_000_000)], "test"),
            INDEX_CONTENT_TYPE,
        ),
        "dir/file.bin": (DOWNLOAD, "application/octet-stream"),
        "evil.html": (EVIL_HTML, "text/html"),
        "evil.svg": (EVIL_SVG, "image/svg+xml"),
    }
    for path, (body, content_type) in pages.items():
        s3.put_object(Bucket=BUCKET, Key="pub/" + path, Body=body, ContentType=content_type)
    with serve_cli("serve-http", endpoint) as port:
        yield f"http://127.0.0.1:{port}/"


def test_status_and_index_pages_render_under_the_sandbox(chromium: str, served_pages: str, tmp_path: Path) -> None:
    # GIVEN the status page as serve-http sends it, with the sandbox CSP
    url = served_pages + STATUS_HTML_PATH
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    # WHEN Chromium loads it
    markup, png = open_in_chromium(chromium, url, tmp_path)
    pixels = decode_png(png)
    # THEN the data is there, the bars are drawn, and the inline stylesheet applied: red badges and
    # history cells besides the down bar
    assert [n.attrs["data-level"] for n in dom_of(markup).find("tr", **{"class": "protocol"})] == ["ok", "down"]
    assert abs(bar_before_track(pixels, OK) - 15) <= 1
    assert pixels_of(pixels, DOWN) > BAR_WIDTH * BAR_HEIGHT + 4 * BAR_HEIGHT
    # AND an index page lists its file
    index = dom_of(open_in_chromium(chromium, served_pages + "dir/", tmp_path / "index")[0])
    assert [a.attrs["href"] for a in index.find("a")] == ["../", "file.bin"]


def test_scripts_in_upstream_html_and_svg_do_not_run(chromium: str, served_pages: str, tmp_path: Path) -> None:
    # GIVEN upstream pages whose scripts do run when opened as files (no CSP)
    (tmp_path / "evil.html").write_bytes(EVIL_HTML)
    (tmp_path / "evil.svg").write_bytes(EVIL_SVG)
    unsandboxed_html = dom_of(open_in_chromium(chromium, (tmp_path / "evil.html").as_uri(), tmp_path / "a")[0])
    assert unsandboxed_html.find("title")[0].content() == "pwned"
    assert 'data-pwned="yes"' in open_in_chromium(chromium, (tmp_path / "evil.svg").as_uri(), tmp_path / "b")[0]
    # WHEN serve-http sends them
    html_dom = dom_of(open_in_chromium(chromium, served_pages + "evil.html", tmp_path / "c")[0])
    svg_markup = open_in_chromium(chromium, served_pages + "evil.svg", tmp_path / "d")[0]
    # THEN their scripts did nothing
    assert html_dom.find("title")[0].content() == "upstream"
    assert html_dom.find("p", id="said")[0].content() == "upstream text"
    assert "<svg" in svg_markup and 'data-pwned="yes"' not in svg_markup


def test_a_click_on_a_sandboxed_index_page_downloads_the_file(chromium: str, served_pages: str, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    browser = DevTools(chromium, tmp_path)
    try:
        session = browser.open_tab()
        browser.call(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads), "eventsEnabled": True}
        )
        # GIVEN an index page as serve-http sends it, with the sandbox CSP
        browser.navigate(session, served_pages + "dir/")
        # WHEN someone clicks the file's link
        browser.click(session, 'a[href="file.bin"]')
        # THEN the browser downloads it (a sandbox without allow-downloads would refuse to)
        finished = browser.wait_for(
            lambda message: (
                message.get("method") == "Browser.downloadProgress" and message["params"]["state"] != "inProgress"
            )
        )
    finally:
        browser.close()
    assert finished is not None, "no download finished"
    assert finished["params"]["state"] == "completed"
    assert (downloads / "file.bin").read_bytes() == DOWNLOAD


# -- the host's front page, as serve-http sends it ----------------------------------------------------

HOSTILE_HOST = '<b>Mirrors</b> & "Co"'
# An upstream URL (which parse_upstream accepts) that would close an attribute and open a script.
HOSTILE_UPSTREAM = "rsync://127.0.0.1:1/openvz\"'><script>document.title='pwned'</script>/"


def write_host_config(path: Path, upstreams: dict[str, str]) -> Path:
    tables = "".join(f"\n[mirrors.{name}]\nupstream = {json.dumps(url)}\n" for name, url in upstreams.items())
    path.write_text(f'[host]\nname = {json.dumps(HOSTILE_HOST)}\nbucket = "{BUCKET}"\n{tables}')
    return path


@pytest.fixture
def front_page(s3: Any, endpoint: str, tmp_path: Path) -> Iterator[str]:
    """A host of two mirrors, openvz and debian, synced by the CLI from two modules of one rsync
    daemon, served by serve-http and verified, its name holding markup; by the verify, its config
    names a hostile upstream for openvz (verify shows it, never contacts it). Yields the front page's URL."""
    openvz_like(tmp_path / "openvz")
    debian_like(tmp_path / "debian")
    config = tmp_path / "mirrors.toml"
    with RsyncDaemon(tmp_path / "openvz", module="openvz", more={"debian": tmp_path / "debian"}) as daemon:
        upstreams = {name: daemon.url_of(name) for name in ("openvz", "debian")}
        synced = run_cli(["sync", "--config", str(write_host_config(config, upstreams)), "--all"], endpoint)
        assert synced.returncode == 0, synced.stderr
    write_host_config(config, upstreams | {"openvz": HOSTILE_UPSTREAM})
    with serve_cli("serve-http", endpoint) as port:
        url = f"http://127.0.0.1:{port}/"
        verified = run_cli(["verify", "--config", str(config), "--http-url", url, "--metrics", "none"], endpoint)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        yield url


def test_the_front_page_has_a_row_per_mirror_and_hostile_values_as_text(
    chromium: str, front_page: str, tmp_path: Path
) -> None:
    # GIVEN the host's front page as serve-http sends it, with the sandbox CSP
    with urllib.request.urlopen(front_page, timeout=10) as response:
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    # WHEN Chromium loads it
    dom = dom_of(open_in_chromium(chromium, front_page, tmp_path)[0])
    # THEN it has a row per mirror, each linking its path and its status page, both protocols ok
    rows = {row.attrs["data-mirror"]: row for row in dom.walk() if row.tag == "tr" and "data-mirror" in row.attrs}
    assert list(rows) == ["debian", "openvz"]
    for name, row in rows.items():
        assert [a.attrs["href"] for a in row.find("a")] == [f"/{name}/", f"/{name}/.mirrorkeeper/status.html"]
        assert [span.content() for span in row.find("span") if "b" in span.attrs.get("class", "").split()] == [
            "success",
            "ok",
        ]
    # AND the host's name and the hostile upstream are text, nothing of them became an element, and the
    # page's one script is JSON data (which would not run anyway: no script does under either policy)
    assert dom.find("h1")[0].content() == HOSTILE_HOST
    assert dom.find("title")[0].content() == f"{HOSTILE_HOST}: mirrors"
    assert HOSTILE_UPSTREAM in [cell.content() for cell in rows["openvz"].find("td")]
    assert dom.find("b") == []
    assert [script.attrs for script in dom.find("script")] == [
        {"type": "application/json", "id": "mirrorkeeper-entries"}
    ]


def test_the_front_pages_links_open_each_mirror(chromium: str, front_page: str, tmp_path: Path) -> None:
    browser = DevTools(chromium, tmp_path)
    try:
        session = browser.open_tab()
        for mirror, first_entry in (("openvz", "README"), ("debian", "dists/")):
            # GIVEN the front page in a tab
            browser.navigate(session, front_page)
            # WHEN someone clicks a mirror's name
            browser.until_loaded(session, lambda mirror=mirror: browser.click(session, f'a[href="/{mirror}/"]'))
            # THEN the tab shows that mirror's index page, under its path
            assert browser.location(session) == f"{front_page}{mirror}/"
            document = browser.call("DOM.getDocument", session=session)["root"]["nodeId"]
            link = {"nodeId": document, "selector": f'a[href="{first_entry}"]'}
            assert browser.call("DOM.querySelector", link, session)["nodeId"], (
                f"{mirror}'s index lists no {first_entry}"
            )
    finally:
        browser.close()
