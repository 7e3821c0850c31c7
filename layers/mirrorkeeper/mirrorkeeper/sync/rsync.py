"""The rsync client: list an upstream module exactly, fetch chosen files into staging.

rsync runs with ``TZ=UTC`` (listed times are local time otherwise) and ``LC_ALL=C`` (so every
byte outside printable ASCII is escaped as ``\\#ooo`` and decoded back here), ``--no-h`` (no
thousands separators) and ``--no-motd`` (a daemon's greeting is not a file).
"""

from __future__ import annotations

import calendar
import hashlib
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import IO

from mirrorkeeper.config import SyncConfig
from mirrorkeeper.entries import EntryType
from mirrorkeeper.errors import StagingFullError, UpstreamError
from mirrorkeeper.names import decode_rsync_name

_LINE = re.compile(rb"^(\S+)\s+(\d+) (\d{4}/\d\d/\d\d) (\d\d):(\d\d):(\d\d) (.*)$", re.DOTALL)
_TYPES = {ord("-"): EntryType.FILE, ord("d"): EntryType.DIR, ord("l"): EntryType.SYMLINK}
# rsync exit codes that mean "could not talk to the server at all".
_UNREACHABLE = {
    5: "the server refused the session (unknown module or access denied)",
    10: "socket error",
    35: "timed out connecting",
}
# Some files failed or vanished, the rest arrived: the caller publishes what it got.
PARTIAL_CODES = {23, 24}
_RSYNC_ENV = {"TZ": "UTC", "LC_ALL": "C"}
# The sender's complaints about one path, with the path quoted as rsync prints names (\#ooo escapes):
#   rsync: [sender] send_files failed to open "a/b.iso" (in mirror): Permission denied (13)
#   rsync: [sender] opendir "locked" (in mirror) failed: Permission denied (13)
#   rsync: [sender] link_stat "gone" (in mirror) failed: No such file or directory (2)
#   file has vanished: "a/b.iso" (in mirror)
_PATH_COMPLAINT = re.compile(
    rb'^rsync: (?:\[sender\] )?(?P<what>[a-z_ ]+?) "(?P<path>.*)"(?: \(in [^)]*\))?(?: failed)?: (?P<why>.*)$'
    rb'|^file has vanished: "(?P<gone>.*)"(?: \(in [^)]*\))?$'
)
# rsync's closing summary ("rsync error: some files/attrs were not transferred ... (code 23)"): no news.
_SUMMARY = re.compile(
    rb"^rsync error: some files(/attrs)? (were not transferred|vanished before they could be transferred)"
)
_STDERR_LIMIT = 16 * 1024 * 1024


def path_complaints(stderr: bytes) -> tuple[dict[str, str], list[str]]:
    """What rsync said about single paths (``{path: reason}``), and every other line it complained with."""
    found: dict[str, str] = {}
    other: list[str] = []
    for raw in stderr.splitlines():
        line = raw.rstrip(b"\r")
        if not line.strip() or _SUMMARY.match(line):
            continue
        match = _PATH_COMPLAINT.match(line)
        if match is None:
            other.append(line.decode("utf-8", errors="replace"))
            continue
        quoted = match.group("gone") if match.group("gone") is not None else match.group("path")
        path = decode_rsync_name(quoted).decode("utf-8", errors="replace").lstrip("/")
        path = path[2:] if path.startswith("./") else path
        if match.group("gone") is not None:
            found[path] = "vanished upstream during the run"
        else:
            what, why = match.group("what").decode(), match.group("why").decode("utf-8", errors="replace")
            found[path] = f"upstream refused it: {why.strip()} (rsync {what.strip()})"
    return found, other


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One listed path before name checks: the name still as bytes."""

    path: bytes
    type: EntryType
    size: int
    mtime: int
    target: bytes | None = None


@dataclass
class Listing:
    entries: list[RawEntry] = field(default_factory=list)
    skipped: list[tuple[bytes, str]] = field(default_factory=list)
    complete: bool = True
    problem: str = ""
    # Directories upstream listed but would not let us read ({path: reason}): their contents are
    # unknown this run, not gone.
    unreadable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FetchResult:
    code: int
    failed: dict[str, str]  # paths rsync could not send, with its reason


def parse_listing_line(line: bytes) -> RawEntry | tuple[bytes, str] | None:
    """A RawEntry, (name, reason) for a path we do not mirror, or None for the root ('.')."""
    match = _LINE.match(line)
    if not match:
        raise ValueError(f"unparseable rsync listing line: {line[:200]!r}")
    perms, size_text, day, hour, minute, second, rest = match.groups()
    size = int(size_text)
    mtime = _day_epoch(day) + int(hour) * 3600 + int(minute) * 60 + int(second)
    kind = _TYPES.get(perms[0])
    target = None
    # Most names have no escapes: skip the substitution for them.
    decoded = decode_rsync_name(rest) if b"\\#" in rest else rest
    if kind is EntryType.SYMLINK:
        # "name -> target", where either may contain " -> "; a symlink's listed size is the
        # length of its target, which tells us where the name ends.
        if size + 4 > len(decoded) or decoded[len(decoded) - size - 4 : len(decoded) - size] != b" -> ":
            raise ValueError(f"symlink line does not end in ' -> ' plus {size} bytes: {line[:200]!r}")
        name, target = decoded[: len(decoded) - size - 4], decoded[len(decoded) - size :]
    else:
        name = decoded
    if name == b".":
        return None
    if kind is None:
        return name, f"not a regular file, directory or symlink (mode {perms.decode(errors='replace')})"
    return RawEntry(path=name, type=kind, size=size, mtime=mtime, target=target)


@lru_cache(maxsize=4096)
def _day_epoch(day: bytes) -> int:
    """b'2026/11/25' → the epoch of its midnight UTC (cached: a listing has far fewer days than files)."""
    return calendar.timegm((int(day[0:4]), int(day[5:7]), int(day[8:10]), 0, 0, 0, 0, 0, 0))


@dataclass(frozen=True)
class RsyncClient:
    command: str = "rsync"
    timeout: int = 300
    include: tuple[str, ...] = ()  # rsync patterns, checked before the excludes
    exclude: tuple[str, ...] = ()
    bwlimit: int = 0  # KiB/s while fetching; 0 for none
    password: str = field(default="", repr=False)  # for a module that asks for one (RSYNC_PASSWORD)

    @classmethod
    def for_sync(cls, config: SyncConfig, password: str = "") -> RsyncClient:
        return cls(config.rsync_command, config.rsync_timeout, config.include, config.exclude, config.bwlimit, password)

    def _base_args(self) -> list[str]:
        # TCP_NODELAY: rsync sends its handshake in writes of a few bytes, and Nagle's algorithm
        # holds each until the daemon's delayed ACK (40 ms on Linux) arrives; measured, that was a
        # quarter of the time it takes to list a 20,000-file module on a fast link.
        return [
            *self.command.split(),
            "--no-motd",
            "--no-h",
            "--contimeout=30",
            "--sockopts=TCP_NODELAY",
            *(f"--include={pattern}" for pattern in self.include),
            *(f"--exclude={pattern}" for pattern in self.exclude),
        ]

    def _fetch_base(self) -> list[str]:
        return [
            *self._base_args(),
            f"--timeout={self.timeout}",
            *([f"--bwlimit={self.bwlimit}"] if self.bwlimit else []),
        ]

    @property
    def _env(self) -> dict[str, str]:
        return {"RSYNC_PASSWORD": self.password} if self.password else {}

    def start_list(self, url: str) -> ListingRun:
        """Start listing ``url`` recursively in the background; ``ListingRun.listing()`` collects it.

        The listing watches its own output for silence instead of passing ``--timeout``: rsync
        forwards that option to the daemon, whose sender then stalls once more on a delayed ACK
        (about 45 ms a listing, measured against rsync 3.x daemons)."""
        return ListingRun(url, [*self._base_args(), "--list-only", "-rl", url], self.timeout, self._env)

    def list(self, url: str) -> Listing:
        """List ``url`` recursively. Raises UpstreamError when nothing could be listed at all."""
        with self.start_list(url) as run:
            return run.listing()

    def fetch(self, url: str, paths: Iterable[str], dest: Path, *options: str) -> FetchResult:
        """Copy ``paths`` (relative to ``url``) into ``dest``, keeping mtimes, with rsync ``options``
        besides. Returns rsync's exit code and the paths it could not send, when the code is 0 or
        partial (some files unreadable or vanished); raises on anything worse."""
        dest.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.NamedTemporaryFile(prefix="files-from-", dir=dest.parent) as files_from,
            tempfile.TemporaryFile() as err,
        ):
            args = _fetch_args(self._fetch_base(), url, paths, files_from, dest, *options)
            code = _start(args, stdout=subprocess.DEVNULL, stderr=err, env=self._env).wait()
            message = _read_tail(err)
            err.seek(0)
            failed, _ = path_complaints(err.read(_STDERR_LIMIT))
        if code == 0 or code in PARTIAL_CODES:
            return FetchResult(code, failed)
        if "No space left on device" in message or _disk_full(dest):
            raise StagingFullError(
                f"the staging directory {dest.parent} ran out of space while fetching; "
                "lower --staging-bytes or give the task more ephemeral storage"
            )
        raise UpstreamError(
            f"fetching from {url} failed: rsync exited {code}: {message}; nothing was published from this batch, "
            "the next run retries it"
        )

    def start_streaming(
        self, url: str, path: str, dest: Path, files_from: IO[bytes], out: IO[bytes], err: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """Start copying the one file ``path`` into ``dest`` in place (written front to back at its final
        name, no temporary copy), in a process group of its own so the caller can pause all of rsync's
        processes (it forks a receiver) while it uploads what has arrived. rsync prints the file's
        upstream mtime to ``out`` (see :func:`streamed_mtime`): the file's own is not to be trusted once
        the caller has punched holes in it."""
        dest.mkdir(parents=True, exist_ok=True)
        args = _fetch_args(
            self._fetch_base(), url, [path], files_from, dest, "--inplace", f"--out-format={_MTIME_FORMAT}"
        )
        return _start(args, stdout=out, stderr=err, new_session=True, env=self._env)


_MTIME_FORMAT = "mtime %M"


def streamed_mtime(out: bytes) -> int | None:
    """The upstream mtime rsync reported for the file it streamed (``--out-format``, UTC), if any."""
    for line in reversed(out.splitlines()):
        if line.startswith(b"mtime "):
            try:
                return calendar.timegm(time.strptime(line[6:].decode(), "%Y/%m/%d-%H:%M:%S"))
            except ValueError:
                return None
    return None


def _fetch_args(
    base: list[str], url: str, paths: Iterable[str], files_from: IO[bytes], dest: Path, *extra: str
) -> list[str]:
    """rsync's arguments to copy ``paths`` into ``dest``, the paths written to ``files_from`` (NUL-separated:
    any name rsync can carry, and no wildcard expansion on the daemon's side)."""
    for path in paths:
        files_from.write(path.encode() + b"\0")
    files_from.flush()
    return [*base, "-t", *extra, f"--files-from={files_from.name}", "--from0", url, str(dest) + "/"]


class ListingRun:
    """One ``rsync --list-only`` running in the background.

    Its output goes to a temporary file, not a pipe, so rsync never waits for us: a caller starts
    the listing first and spends the time rsync takes on its own start-up (imports, the S3
    client, the lock). The raw output's SHA-256 (``digest``) tells whether upstream changed at
    all without parsing a line of it.

    rsync prints each entry as it arrives, so output that stops growing for ``stall_timeout``
    seconds means the upstream stopped answering: rsync is then stopped and the listing fails.
    """

    def __init__(self, url: str, args: list[str], stall_timeout: float, env: dict[str, str] | None = None) -> None:
        self.url = url
        self.stall_timeout = stall_timeout
        # Both files live as long as this object: close() (or the with block) closes them.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._process = _start(args, stdout=self._out, stderr=self._err, env=env)
        except BaseException:
            self._out.close()
            self._err.close()
            raise
        self._code: int | None = None
        self._digest = ""
        self._whole_lines = True
        self._stalled = False
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="listing-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        seen, since = -1, time.monotonic()
        while not self._closed.wait(min(1.0, self.stall_timeout / 4)) and self._process.poll() is None:
            size = os.fstat(self._out.fileno()).st_size + os.fstat(self._err.fileno()).st_size
            now = time.monotonic()
            if size != seen:
                seen, since = size, now
            elif now - since >= self.stall_timeout:
                self._stalled = True
                self._process.kill()
                return

    def wait(self) -> int:
        """Wait for rsync to finish; its exit code."""
        if self._code is None:
            self._code = self._process.wait()
            digest = hashlib.sha256()
            last = b""
            self._out.seek(0)
            for chunk in iter(lambda: self._out.read(1 << 20), b""):
                digest.update(chunk)
                last = chunk
            self._digest = digest.hexdigest()
            self._whole_lines = not last or last.endswith(b"\n")
        return self._code

    @property
    def digest(self) -> str | None:
        """SHA-256 of rsync's output if it is a whole, clean listing (exit 0, ends with a newline), else None."""
        return self._digest if self.wait() == 0 and self._whole_lines else None

    def listing(self) -> Listing:
        """Parse the finished listing. Raises UpstreamError when nothing could be listed at all, or
        when the upstream stalled part-way."""
        code = self.wait()
        if self._stalled:
            raise UpstreamError(
                f"listing {self.url} stalled: rsync received nothing for {self.stall_timeout:g} s and was stopped; "
                "the served mirror is unchanged. Check that the upstream is up, or raise --rsync-timeout if it is "
                "just slow"
            )
        listing = Listing()
        problem = ""
        self._out.seek(0)
        for line in self._out:
            if not line.endswith(b"\n"):
                listing.complete = False  # the output ended mid-line: rsync died or was cut off
                break
            try:
                parsed = parse_listing_line(line[:-1])
            except ValueError as exc:
                problem = str(exc)
                listing.complete = False
                continue
            if isinstance(parsed, RawEntry):
                listing.entries.append(parsed)
            elif parsed is not None:
                listing.skipped.append(parsed)
        if code in PARTIAL_CODES and listing.complete:
            # Unreadable directories upstream are reported by name: the listing is whole but for them.
            self._err.seek(0)
            complaints, other = path_complaints(self._err.read(_STDERR_LIMIT))
            listing.unreadable = complaints
            if complaints and not other:
                listing.problem = ""
                return listing
        if code != 0:
            message = _read_tail(self._err)
            listing.complete = False
            problem = f"rsync exited {code}: {message}"
            if not listing.entries and (code in _UNREACHABLE or code not in PARTIAL_CODES):
                raise UpstreamError(
                    f"cannot list {self.url}: {_UNREACHABLE.get(code, 'rsync failed')} (rsync exit {code}: "
                    f"{message}); check the URL and that the upstream is up, then retry"
                )
        listing.problem = problem if not listing.complete else ""
        return listing

    def close(self) -> None:
        """Stop rsync if it still runs (the run ended early) and drop its output."""
        self._closed.set()
        self._watchdog.join()  # before the files it watches are closed
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._out.close()
        self._err.close()

    def __enter__(self) -> ListingRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _start(
    args: list[str],
    stdout: int | IO[bytes],
    stderr: int | IO[bytes],
    new_session: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            args,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **_RSYNC_ENV, **(env or {})},
            start_new_session=new_session,
        )
    except FileNotFoundError:
        raise UpstreamError(
            f"the rsync command {args[0]!r} was not found; install rsync or set --rsync-command"
        ) from None


def _read_tail(handle: IO[bytes]) -> str:
    handle.seek(0)
    text = handle.read().decode("utf-8", errors="replace").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-3:])[-600:] or "no message"


def _disk_full(path: Path) -> bool:
    try:
        stat = os.statvfs(path)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 1024 * 1024
