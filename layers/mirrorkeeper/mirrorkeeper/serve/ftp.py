"""``serve-ftp``: anonymous, read-only FTP over the served prefix (pyftpdlib, one thread per session).

The virtual filesystem's paths are the FTP paths themselves ('/' is the served root): pyftpdlib's
``ftpnorm`` collapses ``..`` against '/', and every S3 key is built by :class:`ServedTree` under
the served prefix, so no command can name private state. Index pages (directory marker objects)
never appear as files. Missing paths raise ``FileNotFoundError``, which pyftpdlib answers with 550.

Symlinks: ``LIST`` shows them as ``l`` entries with their target (``ls -l`` style) and MLSD as
``type=OS.unix=slink:TARGET``; ``RETR`` of a file symlink sends its target's bytes; ``CWD`` into
a directory symlink enters the target directory (``PWD`` then names the target).

Passive data ports: with a range configured, a ``PASV``/``EPSV`` that finds every port of it taken
is answered 425, never with a port outside it (the load balancer forwards only the range). An IPv6
client is refused ``PASV``, whose reply has room for an IPv4 address only, and told to use ``EPSV``.
"""

import errno
import ipaddress
import logging
import posixpath
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.handlers.ftp.dispatchers import PassiveDTP
from pyftpdlib.handlers.ftp.producers import FileProducer
from pyftpdlib.servers import ThreadedFTPServer

from mirrorkeeper.errors import StorageError
from mirrorkeeper.serve.served import Node, NodeKind, ObjectBody, ServedTree
from mirrorkeeper.sockets import both_families, listening_socket

log = logging.getLogger(__name__)

READ_ONLY = "elr"  # CWD/CDUP, LIST/NLST/MLSD/MLST/SIZE/MDTM, RETR: pyftpdlib refuses every other command
ANONYMOUS_USERS = ("anonymous", "ftp")
_SIX_MONTHS = 180 * 86400
LOOKUP_TTL = 2.0  # seconds a single path lookup is reused within a session
LISTING_TTL = 30.0  # seconds a session trusts its last listing; a sync publishes within minutes anyway
RETR_CHUNK = 1024 * 1024  # bytes read from S3 at a time while sending a file (pyftpdlib reads 64 KiB)


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


@dataclass
class _Cached:
    """The session's last listing: LIST/MLSD lines, SIZE, MDTM and CWD right after it cost nothing."""

    directory: str
    nodes: dict[str, Node]
    taken: float

    def covers(self, directory: str) -> bool:
        return self.directory == directory and time.monotonic() - self.taken < LISTING_TTL


class S3ReadFile:
    """A read-only file over one object: opened lazily so that ``seek`` (REST) becomes a ranged GET.

    The GET runs to the end of the object as it is now, not to the size a listing saw earlier, so a
    file replaced by a sync is sent whole (new version) rather than cut at the old length.
    """

    def __init__(self, tree: ServedTree, key: str, name: str, size: int) -> None:
        self.tree, self.key, self.name, self.size = tree, key, name, size
        self.closed = False
        self._position = 0
        self._body: ObjectBody | None = None

    def seek(self, position: int) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        self._position = position

    def read(self, size: int = -1) -> bytes:
        if self._body is None:
            if self._position and self._position >= self.size:
                return b""  # REST at the end: nothing to send, and S3 would refuse the empty range
            with _storage():
                self._body = self.tree.get(self.key, (self._position, None) if self._position else None)
            if self._body is None:
                raise FileNotFoundError(errno.ENOENT, "the file was removed while being sent")
        with _storage():
            data = self._body.read_all() if size < 0 else self._body.read(size)
        self._position += len(data)
        return data

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
        self.closed = True


class _ViewProducer:
    """pyftpdlib's file producer with big reads handed on as memoryviews.

    S3 is read in ``RETR_CHUNK`` pieces (few, large reads); asynchat then sends each piece in
    slices, which for ``bytes`` would copy the unsent rest on every send, and for a memoryview copies nothing.
    """

    def __init__(self, inner: FileProducer) -> None:
        inner.buffer_size = RETR_CHUNK
        self._inner = inner

    def more(self) -> memoryview:
        return memoryview(self._inner.more())


class S3Filesystem(AbstractedFS):  # type: ignore[misc]
    """pyftpdlib's filesystem interface over a :class:`ServedTree` (one instance per session)."""

    def __init__(self, root: str, cmd_channel: Any, tree: ServedTree) -> None:
        super().__init__("/", cmd_channel)
        self.tree = tree
        self._cached: _Cached | None = None
        # One command asks about the same path several times (pyftpdlib's isdir, then ours):
        # remember single lookups briefly so each costs its HEADs once.
        self._looked: dict[str, tuple[float, Node | None]] = {}

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
        """The entry at absolute FTP path ``path``: from the last listing when it covers it, else HEADs."""
        if path == "/":
            return Node("", NodeKind.DIR, 0, 0)
        parent, name = posixpath.split(path)
        if self._cached is not None and self._cached.covers(parent):
            return self._cached.nodes.get(name)
        now = time.monotonic()
        remembered = self._looked.get(path)
        if remembered is not None and now - remembered[0] < LOOKUP_TTL:
            return remembered[1]
        if len(self._looked) > 64:
            self._looked.clear()
        found = self._lookup(path[1:], name)
        self._looked[path] = (now, found)
        return found

    def _lookup(self, rel: str, name: str) -> Node | None:
        file_key, dir_key = self.tree.file_key(rel), self.tree.dir_key(rel)
        # A directory the cache already knows needs no request (a HEAD for the file name would be a 404).
        marker = None if self.tree.remembered(file_key) is not None else self.tree.remembered(dir_key)
        if marker is not None:
            return Node(name, NodeKind.DIR, 0, marker.mtime)
        with _storage():
            info = self.tree.head(file_key)
            if info is not None:
                kind = NodeKind.FILE if info.symlink_target is None else NodeKind.LINK
                return Node(name, kind, info.size, info.mtime, info.symlink_target)
            marker = self.tree.head(dir_key)
            if marker is None:
                # Directories that hold only our own files (.mirrorkeeper/, project/trace/ for the ftpsync
                # trace where upstream has none) get no index page from the sync, so no marker object:
                # such a directory exists when something is stored under it, as its parent's listing shows.
                listed = self.tree.list_dir(rel)
                return Node(name, NodeKind.DIR, 0, max(n.mtime for n in listed)) if listed else None
        return Node(name, NodeKind.DIR, 0, marker.mtime) if marker is not None else None

    def _dir_link(self, path: str, found: Node) -> str | None:
        """The directory a symlink node leads into, or None when it is not a directory symlink."""
        if found.kind is not NodeKind.LINK or found.target is None:
            return None
        resolved = self.tree.resolve_link(path[1:], found.target)
        with _storage():
            return "/" + resolved if resolved is not None and self.tree.is_dir(resolved) else None

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
            nodes = self.tree.list_dir(entered[1:]) if entered is not None else None
        if nodes is None:
            raise FileNotFoundError(errno.ENOENT, "No such directory")
        self._cached = _Cached(path, {n.name: n for n in nodes}, time.monotonic())
        return [n.name for n in nodes]

    def open(self, filename: str, mode: str) -> S3ReadFile:
        if mode not in ("r", "rb"):
            raise PermissionError(errno.EROFS, "This mirror is read-only")
        found = self.node(filename)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "No such file")
        if found.kind is NodeKind.DIR or self._dir_link(filename, found) is not None:
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        return S3ReadFile(self.tree, self.tree.file_key(filename[1:]), filename, found.size)

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


class PassivePortsTakenError(Exception):
    """Every port of the passive range is taken: the client is told to come back, not sent elsewhere."""


class MirrorPassiveDTP(PassiveDTP):  # type: ignore[misc]
    """pyftpdlib's passive listener, held to the configured range and dual-stack whatever the host says."""

    def create_socket(self, family: int, type: int) -> None:
        super().create_socket(family, type)
        # On a dual-stack server an IPv4 client's data port is bound on its ::ffff:a.b.c.d address.
        both_families(self.socket)

    def listen(self, num: int) -> None:
        # When every port of the range is taken, pyftpdlib binds any free port instead (and listens
        # unbound, on a port the kernel picks, when the last one refused bind() for permission): a port
        # the load balancer does not forward, where the client's data connection would hang and fail.
        ports = self.cmd_channel.passive_ports
        if ports is not None and self.socket.getsockname()[1] not in ports:
            self.close()
            raise PassivePortsTakenError
        super().listen(num)


class MirrorFTPHandler(FTPHandler):  # type: ignore[misc]
    dtp_handler = MirrorDTPHandler
    passive_dtp = MirrorPassiveDTP

    def push_dtp_data(self, data: Any, isproducer: bool = False, file: Any = None, cmd: str | None = None) -> None:
        if isproducer and isinstance(data, FileProducer) and isinstance(file, S3ReadFile):
            data = _ViewProducer(data)
        super().push_dtp_data(data, isproducer, file, cmd)

    def ftp_PASV(self, line: str) -> None:  # noqa: N802 - pyftpdlib dispatches on this exact name
        # A 227 reply has room for an IPv4 address only (RFC 959): pyftpdlib would put an IPv6 client's
        # address where the four numbers go, or send it the masquerade address, IPv4 it may not reach.
        client = ipaddress.ip_address(self.remote_ip)
        if client.version == 6 and client.ipv4_mapped is None:
            self.respond("425 Use EPSV over IPv6 (RFC 2428).")
            return
        super().ftp_PASV(line)

    def _make_epasv(self, extmode: bool = False) -> None:
        try:
            super()._make_epasv(extmode)
        except PassivePortsTakenError:
            self.respond_w_warning("425 Every passive port is taken; try again in a few seconds.")

    def ftp_STOU(self, line: str) -> None:  # noqa: N802 - pyftpdlib dispatches on this exact name
        # pyftpdlib checks STOU's permission only after creating the file, and a read-only
        # filesystem then answers 450 ("try again"); refuse for good, like every other write.
        self.respond("550 Not enough privileges.")


def make_server(
    tree: ServedTree,
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
        "abstracted_fs": staticmethod(partial(S3Filesystem, tree=tree)),  # a factory, not a method
        "banner": f"{mirror_name} mirror (mirrorkeeper): anonymous, read-only FTP.",
        "timeout": idle_timeout,
        "passive_ports": range(passive_ports[0], passive_ports[1] + 1) if passive_ports else None,
        "masquerade_address": masquerade_address,
        "use_sendfile": False,
        "permit_foreign_addresses": False,
    }
    handler = type("ConfiguredMirrorFTPHandler", (MirrorFTPHandler,), attributes)
    server = ThreadedFTPServer(listening_socket(*address), handler)
    server.max_cons = max_connections
    server.max_cons_per_ip = max_connections_per_ip
    return server


@contextmanager
def _storage() -> Iterator[None]:
    """pyftpdlib answers OSError with a reply and keeps the session; anything else would drop it."""
    try:
        yield
    except StorageError as exc:
        log.error("storage failed", extra={"error": str(exc)})
        raise OSError(errno.EIO, "The mirror's storage did not answer; try again shortly") from None
