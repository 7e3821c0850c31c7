"""The read side of the mirror: every S3 call the front ends make goes through here.

Keys are only ever built as ``served_prefix + path`` from paths that :mod:`routing` or the FTP
filesystem already cleaned, so no request can name private state (the one private object read, the
sync's invalidation record, is read through :mod:`mirrorkeeper.state`). A missing key is ``None``,
never an exception, so the front ends answer 404 / 550 without guessing from error text.

An optional :class:`ObjectCache` keeps what recent reads returned (metadata of any object, whole
bodies of small ones) for as long as each object's ``Cache-Control`` allows, capped by the cache's
TTL: the trace file (``no-cache``) is always read from S3, index pages (``max-age=60``) and data
(no header) for at most the TTL. Missing keys are never cached, so a new file shows at once. An
optional :class:`EdgeWatch` drops what each sync invalidated, as CloudFront does, so a file replaced
in place is not served from memory for the rest of a long TTL.
"""

import logging
import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from mirrorkeeper.aws import S3Client
from mirrorkeeper.content import parse_index_entries
from mirrorkeeper.errors import StorageError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.names import MAX_KEY_BYTES
from mirrorkeeper.s3errors import S3Failure, classify, s3_errors
from mirrorkeeper.state import MTIME_META, SYMLINK_META, EdgeRecord, StateStore

CHUNK = 64 * 1024
SMALL_BODY = 1024 * 1024  # bodies up to this size are cached whole; larger ones only their metadata
CACHE_BYTES = 64 * 1024 * 1024  # the whole cache, bodies and an allowance per entry for metadata
_ENTRY_OVERHEAD = 512  # rough bytes of one cached ObjectInfo and its key: bounds metadata-only entries too
log = logging.getLogger(__name__)


class ObjectChangedError(StorageError):
    """The object was replaced after its ETag was read (S3 answered 412 to If-Match): look again."""


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
    """A streamed object body: read in chunks, never held whole in memory (unless it came from the cache)."""

    def __init__(self, info: ObjectInfo, stream: Any, content_range: str | None) -> None:
        self.info = info
        self.content_range = content_range
        self._stream = stream

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        yield from self._stream.iter_chunks(size)

    def read(self, size: int) -> bytes:
        return self._stream.read(size)  # type: ignore[no-any-return]

    def read_all(self) -> bytes:
        return self._stream.read()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stream.close()


class _MemoryStream:
    """A cached body behind the same three calls botocore's StreamingBody offers."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._position = 0

    def read(self, size: int | None = None) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._position + size
        chunk = self._view[self._position : end]
        self._position += len(chunk)
        return chunk.tobytes()

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        while chunk := self.read(size):
            yield chunk

    def close(self) -> None:
        self._view.release()


def cache_lifetime(cache_control: str | None, ttl: float) -> float:
    """Seconds a shared cache may reuse an object, as CloudFront decides with default = maximum TTL = ``ttl``.

    ``no-store`` / ``no-cache`` / ``private`` mean never (the trace file must always be fresh);
    ``s-maxage`` (a shared cache's own) or else ``max-age`` can shorten the TTL, never lengthen it;
    no header means the TTL.
    """
    if ttl <= 0:
        return 0.0
    directives: dict[str, str] = {}
    for part in (cache_control or "").split(","):
        name, _, value = part.partition("=")
        directives[name.strip().lower()] = value.strip().strip('"')
    if directives.keys() & {"no-store", "no-cache", "private"}:
        return 0.0
    for name in ("s-maxage", "max-age"):
        if name in directives:
            try:
                return max(0.0, min(ttl, float(int(directives[name]))))
            except ValueError:
                return 0.0  # a header we cannot read: do not guess a lifetime
    return ttl


@dataclass(frozen=True, slots=True)
class _Stored:
    info: ObjectInfo
    body: bytes | None
    expires: float

    @property
    def cost(self) -> int:
        return _ENTRY_OVERHEAD + (len(self.body) if self.body is not None else 0)


class ObjectCache:
    """What recent reads returned, shared by every connection of one front end (least recently used goes first).

    Each entry lives ``cache_lifetime(its Cache-Control, ttl)`` seconds: a sync's changes are seen
    within ``ttl`` at worst, and objects stored with ``no-cache`` (the trace file) are never kept;
    with ``follow_republish``, reading a changed trace empties the cache at once. Without it the
    cache is an edge that hears nothing of the sync: every entry lives its whole lifetime.
    """

    def __init__(
        self,
        ttl: float,
        max_bytes: int = CACHE_BYTES,
        max_body: int = SMALL_BODY,
        clock: Callable[[], float] = time.monotonic,
        follow_republish: bool = True,
    ) -> None:
        self.ttl = ttl
        self.follow_republish = follow_republish
        self.max_bytes = max_bytes
        self.max_body = max_body
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Stored] = OrderedDict()
        self._bytes = 0
        self._filling: dict[str, tuple[threading.Lock, int]] = {}
        self._uncacheable: dict[str, str] = {}  # key → last ETag seen of objects never cached

    def lookup(self, key: str) -> _Stored | None:
        with self._lock:
            stored = self._entries.get(key)
            if stored is None:
                return None
            if stored.expires <= self._clock():
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            return stored

    def wants_body(self, info: ObjectInfo) -> bool:
        return info.size <= self.max_body and cache_lifetime(info.cache_control, self.ttl) > 0

    def store(self, key: str, info: ObjectInfo, body: bytes | None = None) -> None:
        lifetime = cache_lifetime(info.cache_control, self.ttl)
        if lifetime <= 0:
            if self.follow_republish:
                self._watch(key, info.etag)
            return
        stored = _Stored(info, body, self._clock() + lifetime)
        with self._lock:
            if key in self._entries:
                self._remove(key)
            self._entries[key] = stored
            self._bytes += stored.cost
            while self._bytes > self.max_bytes and self._entries:
                self._remove(next(iter(self._entries)))

    @contextmanager
    def filling(self, key: str) -> Iterator[None]:
        """One reader at a time fills ``key``: the others wait, then find it cached (CloudFront's request
        collapsing). Without this, a burst of clients asking for one file sends a burst of GETs to S3."""
        with self._lock:
            lock, users = self._filling.get(key, (threading.Lock(), 0))
            self._filling[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._filling[key]
                if users == 1:
                    del self._filling[key]
                else:
                    self._filling[key] = (lock, users - 1)

    def _watch(self, key: str, etag: str) -> None:
        """An object no cache may keep (the trace file, written last by every sync) has changed since
        we last read it: the mirror was republished, so forget everything rather than wait for the TTL."""
        with self._lock:
            seen = self._uncacheable.get(key)
            if len(self._uncacheable) >= 256 and seen is None:
                self._uncacheable.clear()  # bounded; at worst one change goes unnoticed and the TTL applies
            self._uncacheable[key] = etag
            if seen is not None and seen != etag:
                self._clear()

    def drop(self, key: str) -> None:
        with self._lock:
            if key in self._entries:
                self._remove(key)

    def drop_all(self, keys: set[str], prefixes: tuple[str, ...] = ()) -> None:
        """Forget ``keys`` and every key beginning with one of ``prefixes``."""
        with self._lock:
            for key in [k for k in self._entries if k in keys or k.startswith(prefixes)]:
                self._remove(key)

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _remove(self, key: str) -> None:
        self._bytes -= self._entries.pop(key).cost


class EdgeWatch:
    """Drops from the cache what the sync invalidated (its record, state.EdgeRecord), as CloudFront
    drops it: a file changed in place is not served from memory once the sync has said so.

    The record is looked at once per ``every`` seconds at most, by the request that finds the look
    due (an idle server asks nothing): one conditional GET, a bodiless 304 while nothing changed.
    Requests arriving meanwhile wait for that look, so none answers from a copy it condemns. A record
    that does not follow the one seen last (a run was missed) or cannot be read empties the cache.
    """

    def __init__(
        self, state: StateStore, cache: ObjectCache, every: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._state = state
        self._cache = cache
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._due = 0.0
        self._etag = ""
        self._run: str | None = None  # the run of the record seen last; None before the first look
        self._failing = False

    def check(self) -> None:
        if self._clock() < self._due:
            return
        with self._lock:
            if self._clock() < self._due:
                return  # looked while we waited
            try:
                self._look()
            finally:
                self._due = self._clock() + self._every

    def _look(self) -> None:
        try:
            changed = self._state.edge_record_since(self._etag)
        except StorageError as exc:
            if not self._failing:
                log.warning("cannot read the sync's invalidations; objects live their TTL", extra={"error": str(exc)})
            self._failing = True
            return
        self._failing = False
        if changed is not None:
            record, self._etag = changed
            self._follow(record)

    def _follow(self, record: EdgeRecord | None) -> None:
        seen, self._run = self._run, record.run_id if record is not None else ""
        if seen is None:
            # The first look: before the first request, so nothing is cached, unless earlier looks
            # failed, and then what was cached meanwhile may predate any run.
            self._cache.clear()
            return
        if record is None or seen not in (record.run_id, record.previous):
            self._cache.clear()
            return
        served = self._state.layout.host.served_prefix  # the record's paths start at the host's root
        keys: set[str] = set()
        prefixes: list[str] = []
        for path in (path for batch in record.batches for path in batch.paths):
            if path.endswith("*"):
                prefixes.append(served + unquote(path[1:-1]))
            else:
                keys.add(served + unquote(path[1:]))
        self._cache.drop_all(keys, tuple(prefixes))


class _Flight[T]:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class _InFlight[T]:
    """Request collapsing: callers asking for the same thing while it is being fetched wait for that
    fetch and share its result; nothing is kept once it is handed out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight[T]] = {}

    def join(self, key: str, fetch: Callable[[], T]) -> T:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]  # set before done, by the leader
        try:
            flight.result = fetch()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()


class EdgeWatches:
    """The :class:`EdgeWatch` of each mirror of a host, by its path ('' for a host of one): a request
    asks the watch of the mirror it falls under, so only mirrors being read cost a look."""

    def __init__(self, served_root: str, watches: dict[str, EdgeWatch]) -> None:
        self._served_root = served_root
        # Deepest path first: no two mirrors nest (config._check_names_and_paths), but the root '' does.
        self._watches = sorted(watches.items(), key=lambda item: -len(item[0]))

    def check(self, key: str) -> None:
        for path, watch in self._watches:
            if not path or key.startswith(f"{self._served_root}{path}/"):
                watch.check()
                return


class ServedTree:
    """The served prefix of one mirror, seen as files and directories."""

    def __init__(
        self,
        client: S3Client,
        layout: MirrorLayout,
        cache: ObjectCache | None = None,
        watch: EdgeWatches | None = None,
    ) -> None:
        self.client = client
        self.layout = layout
        self.bucket = layout.bucket
        self.cache = cache
        self.watch = watch
        self._paginator: Any = None
        self._listings: _InFlight[list[Node] | None] = _InFlight()

    def file_key(self, path: str) -> str:
        return self.layout.served_key(path)

    def dir_key(self, path: str) -> str:
        return self.layout.directory_key(path)

    def head(self, key: str) -> ObjectInfo | None:
        if _too_long(key):
            return None
        if (stored := self._lookup(key)) is not None:
            return stored.info
        with s3_errors(f"read {key}"):
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if classify(exc) is S3Failure.MISSING:
                    return None
                raise
        info = ObjectInfo.from_response(dict(response))
        if self.cache is not None:
            self.cache.store(key, info)
        return info

    def get(
        self, key: str, byte_range: tuple[int, int | None] | None = None, if_match: str | None = None
    ) -> ObjectBody | None:
        """Open ``key`` for streaming, all of it or the inclusive ``byte_range`` (last None: to the end);
        ``if_match`` pins the version a resumed download started from (:class:`ObjectChangedError` if it changed)."""
        if _too_long(key):
            return None
        if self.cache is None:
            return self._get(key, byte_range, if_match)
        if self.watch is not None:
            self.watch.check(key)
        with self.cache.filling(key):
            stored = self.cache.lookup(key)
            if stored is not None and stored.body is not None and if_match in (None, stored.info.etag):
                return _from_memory(stored.info, stored.body, byte_range)
            return self._get(key, byte_range, if_match)

    def _get(self, key: str, byte_range: tuple[int, int | None] | None, if_match: str | None) -> ObjectBody | None:
        extra: dict[str, Any] = {}
        if byte_range is not None:
            extra["Range"] = f"bytes={byte_range[0]}-{'' if byte_range[1] is None else byte_range[1]}"
        if if_match:
            extra["IfMatch"] = if_match
        with s3_errors(f"read {key}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
            except ClientError as exc:
                if classify(exc) is S3Failure.MISSING:
                    return None
                if classify(exc) is S3Failure.CONFLICT:
                    if self.cache is not None:
                        self.cache.drop(key)  # what we remembered is outdated: the next look asks S3
                    raise ObjectChangedError(f"{key} changed while it was being read") from None
                raise
        info = ObjectInfo.from_response(dict(response))
        if byte_range is not None:
            # ContentLength is the length of the range; the object's size is after the '/'.
            total = int(str(response.get("ContentRange", "")).rsplit("/", 1)[-1] or info.size)
            info = replace(info, size=total)
        body = ObjectBody(info, response["Body"], response.get("ContentRange"))
        if self.cache is None:
            return body
        if byte_range is None and self.cache.wants_body(info):
            try:
                with s3_errors(f"read {key}"):
                    data = body.read_all()
            finally:
                body.close()
            self.cache.store(key, info, data)
            return _from_memory(info, data, None)
        self.cache.store(key, info)
        return body

    def is_dir(self, path: str) -> bool:
        """True when ``path`` ('' = root) is a directory of the mirror: its marker object exists."""
        return path == "" or self.head(self.dir_key(path)) is not None

    def resolve_link(self, link_path: str, target: str) -> str | None:
        """The mirror path a symlink at ``link_path`` points to, or None when it leaves the tree."""
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
        if target.startswith("/") or joined == ".." or joined.startswith("../"):
            return None
        return "" if joined == "." else joined

    def remembered(self, key: str) -> ObjectInfo | None:
        """What the cache knows about ``key`` right now, without asking S3 (None: nothing fresh)."""
        stored = self._lookup(key)
        return stored.info if stored is not None else None

    def _lookup(self, key: str) -> _Stored | None:
        if self.cache is None:
            return None
        if self.watch is not None:
            self.watch.check(key)
        return self.cache.lookup(key)

    def list_dir(self, path: str) -> list[Node] | None:
        """The entries of directory ``path``, or None when it does not exist.

        One paginated ListObjectsV2 (delimiter '/') gives the names, sizes and subdirectories; the
        directory's index page (one GET) gives upstream mtimes and symlinks, which a listing does
        not carry. Nothing is fetched per entry. With a cache, clients asking for the same listing
        while it is being fetched share that one answer (it is never kept after).
        """
        if self.cache is None:
            return self._list_dir(path)
        nodes = self._listings.join(path, lambda: self._list_dir(path))
        return None if nodes is None else list(nodes)

    def _list_dir(self, path: str) -> list[Node] | None:
        prefix = self.dir_key(path)
        files: dict[str, tuple[int, int]] = {}
        dirs: list[str] = []
        marker = path == ""
        with s3_errors(f"list {prefix}"):
            if self._paginator is None:  # loading the paginator model costs more CPU than a request
                self._paginator = self.client.get_paginator("list_objects_v2")
            pages = self._paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
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


def _from_memory(info: ObjectInfo, data: bytes, byte_range: tuple[int, int | None] | None) -> ObjectBody:
    if byte_range is None:
        return ObjectBody(info, _MemoryStream(data), None)
    first, last = byte_range[0], min(info.size - 1 if byte_range[1] is None else byte_range[1], info.size - 1)
    return ObjectBody(info, _MemoryStream(data[first : last + 1]), f"bytes {first}-{last}/{info.size}")


def _too_long(key: str) -> bool:
    """A key over S3's limit names nothing: it is missing, not a storage failure (S3 would answer 400)."""
    return len(key.encode()) > MAX_KEY_BYTES


def _mtime(metadata: dict[str, str], last_modified: Any) -> int:
    try:
        return int(metadata[MTIME_META])
    except (KeyError, ValueError):
        return int(last_modified.timestamp()) if last_modified is not None else 0
