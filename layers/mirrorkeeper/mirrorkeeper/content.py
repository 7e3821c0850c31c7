"""What the sync writes besides upstream's bytes: content types, index pages, redirects, trace."""

import html
import json
import mimetypes
import posixpath
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from mirrorkeeper import __version__
from mirrorkeeper.display import human_size
from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.names import printable

_EXTRA_TYPES = {
    ".rpm": "application/x-rpm",
    ".deb": "application/vnd.debian.binary-package",
    ".udeb": "application/vnd.debian.binary-package",
    ".iso": "application/x-iso9660-image",
    ".xz": "application/x-xz",
    ".bz2": "application/x-bzip2",
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".zst": "application/zstd",
    ".asc": "application/pgp-signature",
    ".gpg": "application/pgp-signature",
    ".sig": "application/pgp-signature",
    ".sign": "application/pgp-signature",
    ".md5": "text/plain",
    ".sha1": "text/plain",
    ".sha256": "text/plain",
    ".sha512": "text/plain",
    ".md5sum": "text/plain",
    ".sha1sum": "text/plain",
    ".sha256sum": "text/plain",
    ".sha512sum": "text/plain",
    ".xml": "application/xml",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
}
_TEXT_NAMES = {
    "README",
    "TIME",
    "LICENSE",
    "COPYING",
    "NEWS",
    "ChangeLog",
    "INSTALL",
    "MD5SUMS",
    "SHA1SUMS",
    "SHA256SUMS",
    "SHA512SUMS",
    "CHECKSUM",
    "Release",
    "InRelease",
}
INDEX_CONTENT_TYPE = "text/html; charset=utf-8"
INDEX_CACHE_CONTROL = "public, max-age=60"
# Index pages carry their entries as JSON too (exact mtimes, sizes, symlink targets), so a reader
# of the page needs no request per entry.
INDEX_DATA_ID = "mirrorkeeper-entries"
_INDEX_DATA_OPEN = f'<script type="application/json" id="{INDEX_DATA_ID}">'.encode()
_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{padding:.15em 1.2em .15em 0;text-align:left;white-space:pre}.s{text-align:right}.l{color:#666}"
)


def content_type(name: str) -> str:
    """A Content-Type by extension. Compressed files keep their own type: never a Content-Encoding,
    which would make browsers and curl unpack the download."""
    lower = name.lower()
    ext = posixpath.splitext(lower)[1]
    if ext in _EXTRA_TYPES:
        return _EXTRA_TYPES[ext]
    if name in _TEXT_NAMES:
        return "text/plain; charset=utf-8"
    guessed, encoding = mimetypes.guess_type(lower, strict=False)
    if encoding is not None or guessed is None:
        return "application/octet-stream"
    return guessed


def render_index(directory: str, children: Iterable[Entry], mirror_name: str) -> bytes:
    """An Apache-autoindex-like page: parent link, then name, last modified (UTC), size; sorted by name,
    directories marked with a trailing slash. Links are percent-encoded relative URLs, so every name
    (spaces, '+', '%', '#', '?', unicode) reaches the right key; control characters in a shown name
    are written as rsync writes them (``\\#033``), never raw."""
    title = printable("/" + (directory + "/" if directory else ""))
    rows = []
    if directory:
        rows.append('<tr><td><a href="../">Parent Directory</a></td><td>&nbsp;</td><td class="s">-</td></tr>')
    described = []
    for child in sorted(children, key=lambda e: e.name):
        described.append(_describe(child))
        is_dir = child.type is EntryType.DIR
        name = child.name + ("/" if is_dir else "")
        href = quote(child.name, safe="") + ("/" if is_dir else "")
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(child.mtime))
        size = "-" if is_dir else human_size(child.size, compact=True)
        link = (
            f' <span class="l">-&gt; {html.escape(printable(child.target or ""))}</span>'
            if child.type is EntryType.SYMLINK
            else ""
        )
        rows.append(
            f'<tr><td><a href="{html.escape(href)}">{html.escape(printable(name))}</a>{link}</td>'
            f'<td>{stamp}</td><td class="s">{size}</td></tr>'
        )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Index of {html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Index of {html.escape(title)}</h1>
<table>
<tr><th>Name</th><th>Last modified (UTC)</th><th class="s">Size</th></tr>
{chr(10).join(rows)}
</table>
{index_data(described)}
<address>{html.escape(mirror_name)} &middot; mirrorkeeper {__version__}</address>
</body>
</html>
"""
    return page.encode("utf-8")


def _describe(entry: Entry) -> dict[str, object]:
    described: dict[str, object] = {"name": entry.name, "type": str(entry.type), "mtime": entry.mtime}
    if entry.type is EntryType.FILE:
        described["size"] = entry.size
    if entry.type is EntryType.SYMLINK:
        described["target"] = entry.target or ""
    return described


def index_data(entries: list[dict[str, object]]) -> str:
    """The machine-readable entries of an index page (what :func:`parse_index_entries` reads back)."""
    return f'<script type="application/json" id="{INDEX_DATA_ID}">{_script_json(entries)}</script>'


def _script_json(value: object) -> str:
    # ASCII-only JSON with '<', '>' and '&' escaped cannot close the <script> element, whatever the names.
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def parse_index_entries(page: bytes) -> dict[str, dict[str, Any]]:
    """The machine-readable entries of a page from :func:`render_index`, by name (empty when the page
    predates them or is not one): what the FTP front end lists without a request per entry."""
    start = page.find(_INDEX_DATA_OPEN)
    end = page.find(b"</script>", start)
    if start < 0 or end < 0:
        return {}
    try:
        entries = json.loads(page[start + len(_INDEX_DATA_OPEN) : end])
    except ValueError:
        return {}
    return {e["name"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)}


def render_redirect(link_path: str, final_path: str) -> bytes:
    """Body of a directory symlink's object: a page that sends browsers to the target directory."""
    relative = posixpath.relpath(final_path or ".", posixpath.dirname(link_path) or ".")
    href = "/".join(quote(part, safe="") for part in relative.split("/")) + "/"
    safe = html.escape(href)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={safe}">'
        f'<title>Moved</title></head><body><a href="{safe}">{safe}</a></body></html>\n'
    ).encode()


def render_trace(
    mirror_name: str, upstream: str, finished: float, run_id: str, entries: int, total_bytes: int
) -> bytes:
    """The trace file (Debian ftpsync style): first line the UTC time of the last completed sync."""
    stamp = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(finished))
    lines = [
        stamp,
        f"Date: {_rfc2822(finished)}",
        f"Epoch: {int(finished)}",
        f"Mirror: {mirror_name}",
        f"Upstream: {upstream}",
        f"Creator: mirrorkeeper {__version__}",
        f"Run-Id: {run_id}",
        f"Total-Entries: {entries}",
        f"Total-Bytes: {total_bytes}",
    ]
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class FtpsyncTrace:
    """What Debian's ftpsync writes in ``project/trace/<host>`` after a sync, in its field order, so
    the mirror checkers that read ftpsync's traces read ours."""

    started: float
    finished: float
    host_name: str
    upstream: str
    trigger: str
    bytes_received: int
    archive_serial: str = ""  # copied from upstream's trace when it has one
    maintainer: str = ""
    location: str = ""

    def render(self) -> bytes:
        country = self.location.split(",")[0].strip()
        fields = [
            ("Date", _rfc2822(self.finished)),
            ("Date-Started", _rfc2822(self.started)),
            ("Archive serial", self.archive_serial),
            ("Creator", f"mirrorkeeper {__version__}"),
            ("Running on host", self.host_name),
            ("Maintainer", self.maintainer),
            ("Country", country),
            ("Location", self.location),
            ("Trigger", self.trigger),
            ("Upstream-mirror", urlsplit(self.upstream).hostname or self.upstream),
            ("Total bytes received", str(self.bytes_received)),
        ]
        lines = [time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(self.finished))]
        lines += [f"{name}: {printable(value)}" for name, value in fields if value]
        return ("\n".join(lines) + "\n").encode()


def render_timestamp(finished: float) -> bytes:
    """The timestamp file mirmon probes: the epoch seconds of the sync, first on the line."""
    return f"{int(finished)} {_rfc2822(finished)}\n".encode()


def _rfc2822(epoch: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
