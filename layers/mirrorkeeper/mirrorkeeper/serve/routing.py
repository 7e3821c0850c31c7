"""Request path → mirror path: the Python twin of ``cloudfront/function.js``.

CloudFront runs the JavaScript on every viewer request; ``serve-http`` runs this. Both are checked
against the same table (``cloudfront/cases.json``), so they cannot drift. The rules:

- the path is percent-decoded exactly once, as UTF-8; malformed escapes, invalid UTF-8, NUL, an
  encoded slash (``%2F``) and raw non-ASCII or control characters are refused (400);
- the *decoded* path is resolved as nginx reads it: slashes merged, then RFC 3986 section 5.2.4:
  ``.`` segments go, ``..`` removes the segment before it, and a ``..`` with nothing left to remove
  is refused (400). Resolving after decoding makes ``%2e%2e`` a ``..`` like any other, so the key
  never holds a dot segment however it was spelt; decoding once keeps ``%252e`` the name ``%2e``.
  Slashes are merged because no mirror file's name has an empty segment, and ``http.server``
  already merges them at the start of a path (where clients would read ``//host``), so both twins
  read ``//`` alike. A path ending in a dot segment names a directory (``/a/b/..`` is ``/a/``);
- ``+`` is a literal plus: S3 reads ``+`` in a path as a space (the apt-on-S3 bug), so the
  canonical URI sent to the origin encodes it as ``%2B``;
- overlong paths are refused (414) before they reach S3's 1,024-byte key limit;
- the query string is dropped: S3 would act on ``?versionId=``, ``?acl`` and friends.
"""

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from mirrorkeeper.names import url_path

MAX_PATH_BYTES = 1024  # S3's key limit; a longer resolved path cannot name a mirror file
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODED_SLASH = re.compile(r"%2[fF]")
_UNENCODED = re.compile(r"[^\x21-\x7e]")  # clients must percent-encode these (RFC 3986)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: ``path`` relative to the served root ('' = root, trailing '/' = a
    directory URL), or a refusal with an HTTP ``status``."""

    status: int
    path: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def is_directory(self) -> bool:
        return self.path == "" or self.path.endswith("/")

    @property
    def origin_uri(self) -> str:
        """The canonical, fully encoded URI the origin sees (what the CloudFront Function returns)."""
        return url_path(self.path)


def route(raw_target: str) -> Route:
    """Route a raw request target (``/a%20b/c?x=1``) as the CloudFront Function does."""
    raw_path = raw_target.split("?", 1)[0]
    if not raw_path.startswith("/") or _UNENCODED.search(raw_path):
        return Route(400)
    if _MALFORMED_ESCAPE.search(raw_path) or _ENCODED_SLASH.search(raw_path):
        return Route(400)
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return Route(400)
    if "\x00" in path:
        return Route(400)
    relative = _resolve(path[1:])
    if relative is None:
        return Route(400)
    if len(relative.encode()) > MAX_PATH_BYTES:
        return Route(414)
    return Route(200, relative)


def _resolve(relative: str) -> str | None:
    """``relative`` without dot or empty segments; None when a ``..`` would climb above the root."""
    parts = relative.split("/")
    kept: list[str] = []
    for part in parts:
        if part == "..":
            if not kept:
                return None
            kept.pop()
        elif part not in ("", "."):
            kept.append(part)
    # RFC 3986: a final "." or ".." leaves the trailing slash, so the result is still a directory URL
    trailing = "/" if kept and parts[-1] in ("", ".", "..") else ""
    return "/".join(kept) + trailing
