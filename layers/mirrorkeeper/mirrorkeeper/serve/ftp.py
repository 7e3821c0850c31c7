"""``serve-ftp``: anonymous, read-only FTP over the served prefix (pyftpdlib, one thread per session, s3fs).

The virtual filesystem's paths are the FTP paths themselves ('/' is the served root): pyftpdlib's
``ftpnorm`` collapses ``..`` against '/', and every S3 path is built by :class:`MirrorView` as the
bucket, the served prefix and the cleaned path, so no command can name private state. Index pages
(directory marker objects) never appear as files. Missing paths raise ``FileNotFoundError``, which
pyftpdlib answers with 550.

S3 is read through one ``s3fs.S3FileSystem`` shared by every session: directory listings live in
its ``dircache`` (for ``--cache-ttl`` seconds, the same bound the HTTP front end's object cache has)
and files are its ``S3File`` objects, whose ``seek`` serves REST.

Symlinks: ``LIST`` shows them as ``l`` entries with their target (``ls -l`` style) and MLSD as
``type=OS.unix=slink:TARGET``; ``RETR`` of a file symlink sends its target's bytes; ``CWD`` into
a directory symlink enters the target directory (``PWD`` then names the target).
"""

import errno
import logging
import posixpath
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any

import s3fs
from fsspec.caching import caches
from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.handlers.ftp.producers import FileProducer
from pyftpdlib.servers import ThreadedFTPServer
from s3fs.core import S3File
from s3fs.utils import FileExpired

from mirrorkeeper.aws import RequestCounter, s3fs_options
from mirrorkeeper.config import AwsConfig
from mirrorkeeper.content import parse_index_entries
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.names import MAX_KEY_BYTES
from mirrorkeeper.serve.served import resolve_link

log = logging.getLogger(__name__)

READ_ONLY = "elr"  # CWD/CDUP, LIST/NLST/MLSD/MLST/SIZE/MDTM, RETR: pyftpdlib refuses every other command
ANONYMOUS_USERS = ("anonymous", "ftp")
_SIX_MONTHS = 180 * 86400
RETR_CHUNK = 1024 * 1024  # bytes pyftpdlib asks for at a time while sending a file (its default is 64 KiB)
BLOCK_SIZE = 8 * 1024 * 1024  # bytes one ranged GET reads ahead: fewer requests, bounded memory per transfer
CACHE_TYPE = "readahead"  # sequential reads: keep one block, fetch the next when it runs out
_NODES = "mirrorkeeper.nodes"  # where a listing's parsed entries ride along in s3fs's dircache


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
    etag: str = ""  # the version the listing saw: a RETR reads exactly that one, or looks again


def s3_filesystem(aws: AwsConfig, cache_ttl: float, pool_size: int, counter: RequestCounter | None = None) -> Any:
    """The s3fs filesystem of one server: its own instance (never fsspec's shared one), listings kept
    ``cache_ttl`` seconds (0: never), retries left to botocore's adaptive mode as every client here has."""
    fs = s3fs.S3FileSystem(
        **s3fs_options(aws, pool_size),
        skip_instance_cache=True,
        use_listings_cache=cache_ttl > 0,
        listings_expiry_time=cache_ttl,
        max_paths=1024,  # directories whose listings are kept, least recently used first out
    )
    fs.retries = 1  # s3fs's own retry loop would multiply botocore's attempts
    if counter is not None:
        counter.attach(fs.s3)
    return fs


class MirrorView:
    """The served prefix of one mirror through s3fs, shared by every session of a server."""

    def __init__(self, fs: Any, layout: MirrorLayout) -> None:
        self.fs = fs
        self.layout = layout

    def _path(self, key: str) -> str:
        return f"{self.layout.bucket}/{key}"

    def listing(self, directory: str) -> dict[str, Node] | None:
        """The entries of ``directory`` ('' = root) by name, or None when it does not exist.

        s3fs lists it (one paginated ListObjectsV2, delimiter '/') or answers from its dircache; the
        directory's index page (one GET, only when the listing is fresh from S3) adds upstream mtimes
        and symlink targets, which a listing does not carry. The parsed entries are stored in the
        dircache's own entry, so they expire with the listing they came from.
        """
        prefix = self.layout.directory_key(directory)
        if len(prefix.encode()) > MAX_KEY_BYTES:
            return None
        try:
            entries = self.fs.ls(self._path(prefix.rstrip("/")), detail=True)
        except FileNotFoundError:
            return None
        if not entries:
            return None
        known = entries[0].get(_NODES)
        if known is None:
            known = entries[0][_NODES] = self._nodes(prefix, entries)
        return known  # type: ignore[no-any-return]

    def _nodes(self, prefix: str, entries: list[dict[str, Any]]) -> dict[str, Node]:
        marker = next((e for e in entries if e["name"] == self._path(prefix)), None)
        page = self._read(prefix, int(marker["size"]), marker.get("ETag", "")) if marker else b""
        described = parse_index_entries(page)
        nodes: dict[str, Node] = {}
        for entry in entries:
            name = entry["name"][len(self._path(prefix)) :]
            if name == "" or "/" in name:
                continue  # the directory's own marker (its index page) is never a file
            known = described.get(name)
            if entry["type"] == "directory":
                nodes[name] = Node(name, NodeKind.DIR, 0, int(known["mtime"]) if known else int(time.time()))
            elif known is not None and known.get("type") == "l":
                target = str(known.get("target") or "")
                nodes[name] = Node(name, NodeKind.LINK, entry["size"], int(known["mtime"]), target, entry["ETag"])
            else:
                mtime = int(known["mtime"]) if known else int(entry["LastModified"].timestamp())
                nodes[name] = Node(name, NodeKind.FILE, entry["size"], mtime, None, entry["ETag"])
        return nodes

    def _read(self, key: str, size: int, etag: str) -> bytes:
        with MirrorFile(self.fs, self._path(key), key, size, etag) as page:
            return page.read()  # type: ignore[no-any-return]

    def lookup(self, path: str) -> Node | None:
        """The entry at mirror path ``path``: from its directory's listing, which s3fs keeps for the
        next lookups there (RETR after LIST, SIZE then MDTM, a client walking a directory)."""
        if path == "":
            return Node("", NodeKind.DIR, 0, 0)
        parent, name = posixpath.split(path)
        listing = self.listing(parent)
        return listing.get(name) if listing is not None else None

    def open(self, path: str, found: Node, ftp_path: str) -> "MirrorFile":
        return MirrorFile(self.fs, self._path(self.layout.served_key(path)), ftp_path, found.size, found.etag)


class MirrorFile(S3File):  # type: ignore[misc]
    """s3fs's file object pinned to the version the listing saw (``If-Match``): a range of another version is
    never spliced in. A file replaced before its first byte was read is looked up again and sent whole, at its
    new length; one replaced while being sent fails the transfer (the client retries) rather than mixing two."""

    def __init__(self, fs: Any, path: str, name: str, size: int, etag: str) -> None:
        # Built directly rather than by fs.open, which strips the trailing '/' of a directory's index page.
        super().__init__(fs, path, "rb", block_size=BLOCK_SIZE, cache_type=CACHE_TYPE, size=size)
        self.name = name  # pyftpdlib logs transfers by it
        self._pin(size, etag)
        self._started = False

    def _pin(self, size: int, etag: str) -> None:
        self.size = size
        self.cache = caches[CACHE_TYPE](self.blocksize, self._fetch_range, size)
        self.read_kw = {**self._request_payer_kw, "IfMatch": etag} if etag else self._request_payer_kw

    def read(self, length: int = -1) -> bytes:
        try:
            data = super().read(length)
        except FileExpired:
            if self._started:
                raise
            fresh = self.fs.info(self.path, refresh=True)  # one HEAD: the version there now
            self._pin(int(fresh["size"]), fresh.get("ETag", ""))
            data = super().read(length)
        self._started = True
        return data  # type: ignore[no-any-return]


class ReadOnlyAuthorizer(DummyAuthorizer):  # type: ignore[misc]
    """Anonymous and ``ftp`` log in with any password; nobody else does."""

    def __init__(self) -> None:
        super().__init__()
        for user in ANONYMOUS_USERS:
            # pyftpdlib insists on a real home directory; '/' is never touched, the FS is virtual.
            self.add_user(user, "", "/", perm=READ_ONLY)

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        if username not in ANONYMOUS_USERS:
            raise AuthenticationFailed("This mirror is anonymous only: log in as 'anonymous' or 'ftp'.")


class _ViewProducer:
    """pyftpdlib's file producer with big reads handed on as memoryviews.

    S3 is read in ``RETR_CHUNK`` pieces (few, large reads); asynchat then sends each piece in
    slices, which for ``bytes`` would copy the unsent rest on every send, and for a memoryview copies nothing.
    """

    def __init__(self, inner: FileProducer) -> None:
        inner.buffer_size = RETR_CHUNK
        self._inner = inner

    def more(self) -> memoryview:
        with _storage():
            return memoryview(self._inner.more())


class S3Filesystem(AbstractedFS):  # type: ignore[misc]
    """pyftpdlib's filesystem interface over a :class:`MirrorView` (one instance per session)."""

    def __init__(self, root: str, cmd_channel: Any, view: MirrorView) -> None:
        super().__init__("/", cmd_channel)
        self.view = view

    # -- paths: virtual FTP paths are the filesystem paths --------------------------------------

    def ftp2fs(self, ftppath: str) -> str:
        return str(self.ftpnorm(ftppath))

    def fs2ftp(self, fspath: str) -> str:
        return fspath

    def validpath(self, path: str) -> bool:
        return True  # ftpnorm already normalised it against '/'

    def realpath(self, path: str) -> str:
        return path

    # -- what exists ------------------------------------------------------------------------------

    def node(self, path: str) -> Node | None:
        """The entry at absolute FTP path ``path``."""
        with _storage():
            return self.view.lookup(path[1:])

    def _dir_link(self, path: str, found: Node) -> str | None:
        """The directory a symlink node leads into, or None when it is not a directory symlink."""
        if found.kind is not NodeKind.LINK or found.target is None:
            return None
        resolved = resolve_link(path[1:], found.target)
        if resolved is None:
            return None
        target = self.node("/" + resolved)
        return "/" + resolved if target is not None and target.kind is NodeKind.DIR else None

    def _entered(self, path: str) -> str | None:
        """The directory ``path`` leads into (itself, or a directory symlink's target), or None."""
        found = self.node(path)
        if found is None:
            return None
        return path if found.kind is NodeKind.DIR else self._dir_link(path, found)

    def isdir(self, path: str) -> bool:
        return self._entered(path) is not None

    def isfile(self, path: str) -> bool:
        found = self.node(path)
        return found is not None and found.kind is not NodeKind.DIR and self._dir_link(path, found) is None

    def islink(self, path: str) -> bool:
        return False  # links are resolved by us, never by pyftpdlib's readlink

    def lexists(self, path: str) -> bool:
        return self.node(path) is not None

    def _require(self, path: str) -> Node:
        found = self.node(path)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return found

    def stat(self, path: str) -> Node:
        return self._require(path)

    lstat = stat

    def getsize(self, path: str) -> int:
        return self._require(path).size

    def getmtime(self, path: str) -> int:
        return self._require(path).mtime

    # -- reading ----------------------------------------------------------------------------------

    def chdir(self, path: str) -> None:
        entered = self._entered(path)
        if entered is None:
            raise FileNotFoundError(errno.ENOENT, "No such directory")
        self.cwd = entered

    def listdir(self, path: str) -> list[str]:
        entered = self._entered(path)
        with _storage():
            nodes = self.view.listing(entered[1:]) if entered is not None else None
        if nodes is None:
            raise FileNotFoundError(errno.ENOENT, "No such directory")
        return sorted(nodes)

    def open(self, filename: str, mode: str) -> MirrorFile:
        if mode not in ("r", "rb"):
            raise PermissionError(errno.EROFS, "This mirror is read-only")
        found = self.node(filename)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "No such file")
        if found.kind is NodeKind.DIR or self._dir_link(filename, found) is not None:
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        return self.view.open(filename[1:], found, filename)

    # -- refused: pyftpdlib's permissions stop these first; this is the second line of defence -----

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EROFS, "This mirror is read-only")

    mkdir = rmdir = remove = rename = chmod = utime = mkstemp = _refuse

    # -- listings: one line per entry, from the listing already fetched ---------------------------

    def format_list(self, basedir: str, listing: list[str], ignore_err: bool = True) -> Iterator[bytes]:
        now = time.time()
        encoding, errors = self.cmd_channel.encoding, self.cmd_channel.unicode_errors
        for name in listing:
            found = self.node(posixpath.join(basedir, name))
            if found is None:
                continue
            stamp = time.strftime(
                "%b %d %H:%M" if abs(now - found.mtime) < _SIX_MONTHS else "%b %d  %Y", time.gmtime(found.mtime)
            )
            mode, size, suffix = {
                NodeKind.DIR: ("drwxr-xr-x", 4096, ""),
                NodeKind.LINK: ("lrwxrwxrwx", found.size, f" -> {found.target}"),
                NodeKind.FILE: ("-rw-r--r--", found.size, ""),
            }[found.kind]
            line = f"{mode}   1 ftp      ftp      {size:>12} {stamp} {name}{suffix}\r\n"
            yield line.encode(encoding, errors)

    def format_mlsx(
        self, basedir: str, listing: list[str], perms: str, facts: list[str], ignore_err: bool = True
    ) -> Iterator[bytes]:
        encoding, errors = self.cmd_channel.encoding, self.cmd_channel.unicode_errors
        for name in listing:
            found = self.node(posixpath.join(basedir, name))
            if found is None:
                if not ignore_err:
                    raise FileNotFoundError(errno.ENOENT, "No such file or directory")
                continue
            kind = {
                NodeKind.DIR: "dir",
                NodeKind.FILE: "file",
                NodeKind.LINK: f"OS.unix=slink:{found.target}",
            }[found.kind]
            values = {
                "type": kind,
                "size": str(found.size),
                "modify": time.strftime("%Y%m%d%H%M%S", time.gmtime(found.mtime)),
                "perm": "el" if found.kind is NodeKind.DIR else "r",
            }
            text = "".join(f"{fact}={values[fact]};" for fact in facts if fact in values)
            yield f"{text} {name}\r\n".encode(encoding, errors)


class MirrorDTPHandler(DTPHandler):  # type: ignore[misc]
    # Up to this much per send(): the kernel takes what fits; fewer trips through the event loop.
    ac_out_buffer_size = RETR_CHUNK


class MirrorFTPHandler(FTPHandler):  # type: ignore[misc]
    dtp_handler = MirrorDTPHandler

    def push_dtp_data(self, data: Any, isproducer: bool = False, file: Any = None, cmd: str | None = None) -> None:
        if isproducer and isinstance(data, FileProducer) and isinstance(file, MirrorFile):
            data = _ViewProducer(data)
        super().push_dtp_data(data, isproducer, file, cmd)

    def ftp_STOU(self, line: str) -> None:  # noqa: N802 - pyftpdlib dispatches on this exact name
        # pyftpdlib checks STOU's permission only after creating the file, and a read-only
        # filesystem then answers 450 ("try again"); refuse for good, like every other write.
        self.respond("550 Not enough privileges.")


def make_server(
    view: MirrorView,
    address: tuple[str, int],
    mirror_name: str,
    max_connections: int = 256,
    max_connections_per_ip: int = 16,
    idle_timeout: float = 300.0,
    passive_ports: tuple[int, int] | None = None,
    masquerade_address: str | None = None,
) -> ThreadedFTPServer:
    """A ready-to-serve FTP server (call ``serve_forever``); threaded because S3 calls block."""
    attributes: dict[str, Any] = {
        "authorizer": ReadOnlyAuthorizer(),
        "abstracted_fs": staticmethod(partial(S3Filesystem, view=view)),  # a factory, not a method
        "banner": f"{mirror_name} mirror (mirrorkeeper): anonymous, read-only FTP.",
        "timeout": idle_timeout,
        "passive_ports": range(passive_ports[0], passive_ports[1] + 1) if passive_ports else None,
        "masquerade_address": masquerade_address,
        "use_sendfile": False,
        "permit_foreign_addresses": False,
    }
    handler = type("ConfiguredMirrorFTPHandler", (MirrorFTPHandler,), attributes)
    server = ThreadedFTPServer(address, handler)
    server.max_cons = max_connections
    server.max_cons_per_ip = max_connections_per_ip
    return server


@contextmanager
def _storage() -> Iterator[None]:
    """pyftpdlib answers OSError with a reply and keeps the session; anything else would drop it.

    s3fs turns S3's answers into OSErrors already (a missing key is FileNotFoundError); what is left
    (a connection that failed, a timeout) becomes one here, logged."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        log.error("storage failed", extra={"error": str(exc)})
        raise OSError(errno.EIO, "The mirror's storage did not answer; try again shortly") from None
