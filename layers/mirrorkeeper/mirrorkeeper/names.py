"""Mirror names are data: decode what rsync prints, decide which names S3 can carry, spell them as URLs."""

import re
from urllib.parse import quote

from mirrorkeeper.layout import MirrorLayout

_RSYNC_ESCAPE = re.compile(rb"\\#([0-7]{3})")
MAX_KEY_BYTES = 1024
# encodeURIComponent's unreserved set, so Python and JavaScript produce the same canonical URI
_URI_SAFE = "-_.!~*'()"


def decode_rsync_name(raw: bytes) -> bytes:
    r"""Undo rsync's output escaping: ``\#ooo`` is one byte in octal (newline is ``\#012``)."""
    return _RSYNC_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), raw)


def refusal_reason(path_bytes: bytes, layout: MirrorLayout, reserved: tuple[str, ...]) -> str | None:
    """Why a name cannot be mirrored, or None when it can. Never raises."""
    try:
        path = path_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return "name is not valid UTF-8, which S3 keys require"
    if "\x00" in path:
        return "name contains a NUL byte"
    if "\n" in path or "\r" in path:
        return "name contains a line break (CR or LF), which no line-based protocol (FTP, rsync listings) can carry"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "name has an empty, '.' or '..' segment"
    if len(layout.served_key(path).encode()) + 1 > MAX_KEY_BYTES:
        return f"name is longer than S3's {MAX_KEY_BYTES}-byte key limit allows under this prefix"
    for name in reserved:
        if path == name.rstrip("/") or (name.endswith("/") and path.startswith(name)):
            return f"name {name!r} is reserved for mirrorkeeper's own files"
    return None


def printable(path: str) -> str:
    r"""A one-line rendering of a name for plans and logs, with rsync's ``\#ooo`` for control characters."""
    return "".join(f"\\#{ord(c):03o}" if ord(c) < 32 or ord(c) == 127 else c for c in path)


def url_path(path: str) -> str:
    """The canonical URL path of mirror path ``path`` ('' the root, 'dir/' a directory's page): every
    segment percent-encoded as the CloudFront Function re-encodes each request (``encodeURIComponent``).
    It is what the origin is asked for, so it is also how CloudFront's cache keys, and therefore its
    invalidation paths, spell the path."""
    return "/" + "/".join(quote(part, safe=_URI_SAFE) for part in path.split("/"))
