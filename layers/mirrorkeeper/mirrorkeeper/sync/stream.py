"""A file larger than the staging budget: fetched alone and uploaded while it arrives, so it needs
neither the disk space nor the memory of its size.

rsync writes the file in place (``--inplace``: front to back, at its final name). We read what has
arrived, gather it into parts of at least S3's 5 MiB minimum, upload each part, and punch the bytes
already read out of the file (``fallocate(PUNCH_HOLE)``), so the file on disk stays sparse. When
rsync runs ahead of us by more than ``backlog`` bytes, a watcher thread (checking every
millisecond, uploads or not) pauses its process group (SIGSTOP) until we catch up (SIGCONT): the
disk holds that backlog and what rsync writes in a millisecond, no more.

rsync's receiver never reads back a new file it writes (there is no basis file to compare with),
so the holes do not disturb it. Should it redo the file (a checksum mismatch in transit), the run
cannot know which parts were good: rsync says so on stderr, and the path is skipped for this run.
"""

import ctypes
import errno
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirrorkeeper.errors import UpstreamError
from mirrorkeeper.sync.rsync import PARTIAL_CODES, RsyncClient, path_complaints, streamed_mtime
from mirrorkeeper.sync.store import MirrorStore

log = logging.getLogger(__name__)

MIN_PART = 8 * 1024 * 1024  # S3 wants at least 5 MiB in every part but the last
MAX_PARTS = 9000  # S3 allows 10,000; the rest is headroom for a file that grows during the run
READ_CHUNK = 1024 * 1024
POLL_SECONDS = 0.01
WATCH_SECONDS = 0.001
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_REDO = b"failed verification"


@dataclass(frozen=True)
class Streamed:
    """A file that arrived whole and is stored: its SHA-256, size and upstream mtime."""

    digest: bytes
    size: int
    mtime: int


@dataclass(frozen=True)
class NotStreamed:
    """A file upstream would not send (unreadable, vanished): skipped for this run."""

    reason: str


def part_size(expected_size: int) -> int:
    return max(MIN_PART, -(-expected_size // MAX_PARTS))


class _HolePuncher:
    """``fallocate(PUNCH_HOLE)`` through libc (Python has no binding); a file system that cannot
    punch holes just keeps the bytes, and the backlog limit still bounds what rsync writes ahead."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fallocate: Any = getattr(libc, "fallocate", None)
        self.works = self._fallocate is not None

    def punch(self, fd: int, offset: int, length: int) -> None:
        if not self.works or length <= 0:
            return
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if self._fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
            code = ctypes.get_errno()
            if code in (errno.EOPNOTSUPP, errno.ENOSYS):
                self.works = False
                log.warning("the staging file system cannot punch holes; streamed files take their size on disk")
            else:
                raise OSError(code, os.strerror(code))


def stream_file(
    rsync: RsyncClient,
    url: str,
    path: str,
    expected_size: int,
    staging: Path,
    store: MirrorStore,
    key: str,
    content_type: str,
    metadata: dict[str, str],
    backlog: int,
) -> Streamed | NotStreamed:
    """Fetch ``path`` from ``url`` and store it at ``key`` as it arrives (see the module docstring).
    Raises UpstreamError when rsync fails for a reason other than this one file (StorageError when S3
    does); an unfinished multipart upload is abandoned either way."""
    upload_id = store.start_parts(key, content_type, metadata)
    try:
        outcome = _Stream(rsync, url, path, expected_size, staging, store, key, upload_id, backlog).run()
    except BaseException:
        store.abandon_parts(key, upload_id)
        raise
    if isinstance(outcome, NotStreamed):
        store.abandon_parts(key, upload_id)
    return outcome


class _Stream:
    def __init__(
        self,
        rsync: RsyncClient,
        url: str,
        path: str,
        expected_size: int,
        staging: Path,
        store: MirrorStore,
        key: str,
        upload_id: str,
        backlog: int,
    ) -> None:
        self.rsync, self.url, self.path, self.staging = rsync, url, path, staging
        self.store, self.key, self.upload_id = store, key, upload_id
        self.part_size = part_size(expected_size)
        self.backlog = max(backlog, READ_CHUNK)
        self.local = staging / path
        self.digest = hashlib.sha256()
        self.parts: list[dict[str, Any]] = []
        self.pending = bytearray()
        self.offset = 0  # bytes read (and punched out) so far; the watcher compares the file's size with it
        self.paused = False
        self.puncher = _HolePuncher()
        self.final: os.stat_result | None = None
        self._pause_lock = threading.Lock()
        self._done = threading.Event()

    def run(self) -> Streamed | NotStreamed:
        with (
            tempfile.NamedTemporaryFile(prefix="files-from-", dir=self.staging.parent) as files_from,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            process = self.rsync.start_streaming(self.url, self.path, self.staging, files_from, out, err)
            watcher = threading.Thread(target=self._watch, args=(process,), name="stream-backlog", daemon=True)
            watcher.start()
            try:
                code = self._follow(process)
            finally:
                self._done.set()
                watcher.join()
                self._resume(process)
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            err.seek(0)
            stderr = err.read(1024 * 1024)
            out.seek(0)
            mtime = streamed_mtime(out.read(1024 * 1024))
        failed, other = path_complaints(stderr)
        if code in PARTIAL_CODES and self.path in failed:
            return NotStreamed(failed[self.path])
        if code != 0 or _REDO in stderr:
            detail = " / ".join(other[-3:]) or f"rsync exited {code}"
            if _REDO in stderr or code in PARTIAL_CODES:
                return NotStreamed(f"the transfer had to be redone and cannot be streamed ({detail})")
            raise UpstreamError(
                f"fetching {self.path} from {self.url} failed: {detail}; nothing of it was published, the next run "
                "retries it"
            )
        stat = self.final
        if stat is None or stat.st_size != self.offset or mtime is None:
            raise UpstreamError(
                f"{self.path} ended at {stat.st_size if stat else 0} bytes but {self.offset} arrived (mtime {mtime}); "
                "nothing of it was published, the next run retries it"
            )
        if self.pending or not self.parts:
            self._send_part(len(self.pending))
        self.store.finish_parts(self.key, self.upload_id, self.parts)
        self.local.unlink()
        return Streamed(self.digest.digest(), stat.st_size, mtime)

    def _follow(self, process: "subprocess.Popen[bytes]") -> int:
        """Read, upload and punch out what arrives until rsync exits; returns its exit code."""
        fd: int | None = None
        try:
            while True:
                code = process.poll()
                if fd is None and self.local.exists():
                    fd = os.open(self.local, os.O_RDWR)
                if fd is not None:
                    self._drain(fd, process)
                if code is not None:
                    if fd is None and self.local.exists():
                        fd = os.open(self.local, os.O_RDWR)
                    if fd is not None:
                        # rsync set the upstream mtime as it finished; punching the rest out would move it.
                        self.final = os.fstat(fd)
                        self._drain(fd, process)
                    return code
                time.sleep(POLL_SECONDS)
        finally:
            if fd is not None:
                os.close(fd)

    def _watch(self, process: "subprocess.Popen[bytes]") -> None:
        """Keep rsync at most ``backlog`` bytes ahead of what has been read, whatever the reader is doing."""
        while not self._done.wait(WATCH_SECONDS):
            try:
                ahead = self.local.stat().st_size - self.offset
            except FileNotFoundError:
                continue
            if ahead > self.backlog:
                self._pause(process)
            elif ahead <= self.backlog // 2:
                self._resume(process)

    def _drain(self, fd: int, process: "subprocess.Popen[bytes]") -> None:
        while True:
            ahead = os.fstat(fd).st_size - self.offset
            if ahead <= 0:
                return
            chunk = os.pread(fd, min(READ_CHUNK, ahead), self.offset)
            if not chunk:
                return
            self.digest.update(chunk)
            self.pending += chunk
            self.puncher.punch(fd, self.offset, len(chunk))
            self.offset += len(chunk)
            while len(self.pending) >= self.part_size:
                self._send_part(self.part_size)

    def _send_part(self, size: int) -> None:
        body = bytes(self.pending[:size])
        self.parts.append(self.store.put_part(self.key, self.upload_id, len(self.parts) + 1, body))
        del self.pending[:size]

    def _pause(self, process: "subprocess.Popen[bytes]") -> None:
        with self._pause_lock:
            if not self.paused and process.poll() is None:
                os.killpg(process.pid, signal.SIGSTOP)
                self.paused = True

    def _resume(self, process: "subprocess.Popen[bytes]") -> None:
        with self._pause_lock:
            if self.paused:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGCONT)
                self.paused = False
