"""The read side of the mirror: every S3 call the front ends make goes through here.

Keys are only ever built as ``served_prefix + path`` from paths that :mod:`routing` or the FTP
filesystem already cleaned, so nothing here can name private state. A missing key is ``None``,
never an exception, so the front ends answer 404 / 550 without guessing from error text.
"""

import posixpath
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from mirrorkeeper.aws import S3Client
from mirrorkeeper.content import parse_index_entries
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.names import MAX_KEY_BYTES
from mirrorkeeper.store import MTIME_META, SYMLINK_META, s3_errors

_MISSING = ("404", "NoSuchKey", "NotFound")
CHUNK = 64 * 1024


class NodeKind(StrEnum):
    FILE = "file"
    DIR = "dir"
    LINK = "link"


@dataclass(frozen=True, slots=True)
class Node:
    """One entry of a directory listing."""

    name: str
    kind: NodeKind
    size: int
    mtime: int
    target: str | None = None  # a symlink's text, as upstream wrote it


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a HEAD (or the head of a GET) says about one object."""

    size: int
    mtime: int  # upstream mtime when the sync recorded one, else S3's LastModified
    etag: str
    content_type: str
    cache_control: str | None
    symlink_target: str | None

    @classmethod
    def from_response(cls, response: dict[str, Any]) -> "ObjectInfo":
        metadata = response.get("Metadata", {})
        target = metadata.get(SYMLINK_META)
        return cls(
            size=int(response["ContentLength"]),
            mtime=_mtime(metadata, response.get("LastModified")),
            etag=response.get("ETag", ""),
            content_type=response.get("ContentType") or "application/octet-stream",
            cache_control=response.get("CacheControl"),
            symlink_target=unquote(target) if target is not None else None,
        )


class ObjectBody:
    """A streamed object body: read in chunks, never held whole in memory."""

    def __init__(self, info: ObjectInfo, stream: Any, content_range: str | None) -> None:
        self.info = info
        self.content_range = content_range
        self._stream = stream

    def chunks(self) -> Iterator[bytes]:
        yield from self._stream.iter_chunks(CHUNK)

    def read(self, size: int) -> bytes:
        return self._stream.read(size)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stream.close()


class ServedTree:
    """The served prefix of one mirror, seen as files and directories."""

    def __init__(self, client: S3Client, layout: MirrorLayout) -> None:
        self.client = client
        self.layout = layout
        self.bucket = layout.bucket

    def file_key(self, path: str) -> str:
        return self.layout.served_key(path)

    def dir_key(self, path: str) -> str:
        return self.layout.directory_key(path)

    def head(self, key: str) -> ObjectInfo | None:
        if _too_long(key):
            return None
        with s3_errors(f"read {key}"):
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
        return ObjectInfo.from_response(dict(response))

    def get(
        self, key: str, byte_range: tuple[int, int] | None = None, if_match: str | None = None
    ) -> ObjectBody | None:
        """Open ``key`` for streaming, all of it or the inclusive ``byte_range``; ``if_match`` pins
        the version a resumed download started from (S3 answers 412 if it changed)."""
        if _too_long(key):
            return None
        extra: dict[str, Any] = {}
        if byte_range is not None:
            extra["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        if if_match:
            extra["IfMatch"] = if_match
        with s3_errors(f"read {key}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
        info = ObjectInfo.from_response(dict(response))
        if byte_range is not None:
            # ContentLength is the length of the range; the object's size is after the '/'.
            total = int(str(response.get("ContentRange", "")).rsplit("/", 1)[-1] or info.size)
            info = ObjectInfo(total, info.mtime, info.etag, info.content_type, info.cache_control, info.symlink_target)
        return ObjectBody(info, response["Body"], response.get("ContentRange"))

    def is_dir(self, path: str) -> bool:
        """True when ``path`` ('' = root) is a directory of the mirror: its marker object exists."""
        return path == "" or self.head(self.dir_key(path)) is not None

    def resolve_link(self, link_path: str, target: str) -> str | None:
        """The mirror path a symlink at ``link_path`` points to, or None when it leaves the tree."""
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
        if target.startswith("/") or joined == ".." or joined.startswith("../"):
            return None
        return "" if joined == "." else joined

    def list_dir(self, path: str) -> list[Node] | None:
        """The entries of directory ``path``, or None when it does not exist.

        One paginated ListObjectsV2 (delimiter '/') gives the names, sizes and subdirectories; the
        directory's index page (one GET) gives upstream mtimes and symlinks, which a listing does
        not carry. Nothing is fetched per entry.
        """
        prefix = self.dir_key(path)
        files: dict[str, tuple[int, int]] = {}
        dirs: list[str] = []
        marker = path == ""
        with s3_errors(f"list {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(prefix) :]
                    if name == "":
                        marker = True  # the directory's own marker / index page: never a file
                        continue
                    files[name] = (int(item["Size"]), int(item["LastModified"].timestamp()))
                dirs.extend(p["Prefix"][len(prefix) : -1] for p in page.get("CommonPrefixes", []))
        if not (marker or files or dirs):
            return None
        described = parse_index_entries(self._index_page(prefix)) if marker else {}
        nodes = []
        for name, (size, modified) in files.items():
            known = described.get(name)
            if known is not None and known.get("type") == "l":
                nodes.append(Node(name, NodeKind.LINK, size, int(known["mtime"]), str(known.get("target") or "")))
            else:
                nodes.append(Node(name, NodeKind.FILE, size, int(known["mtime"]) if known else modified))
        for name in dirs:
            known = described.get(name)
            nodes.append(Node(name, NodeKind.DIR, 0, int(known["mtime"]) if known else int(time.time())))
        return sorted(nodes, key=lambda n: n.name)

    def _index_page(self, key: str) -> bytes:
        body = self.get(key)
        if body is None:
            return b""
        try:
            return b"".join(body.chunks())
        finally:
            body.close()


def _too_long(key: str) -> bool:
    """A key over S3's limit names nothing: it is missing, not a storage failure (S3 would answer 400)."""
    return len(key.encode()) > MAX_KEY_BYTES


def _mtime(metadata: dict[str, str], last_modified: Any) -> int:
    try:
        return int(metadata[MTIME_META])
    except (KeyError, ValueError):
        return int(last_modified.timestamp()) if last_modified is not None else 0


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
