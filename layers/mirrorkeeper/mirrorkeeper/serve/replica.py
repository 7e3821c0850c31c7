"""The local replica ``serve-rsync`` serves: a mirror's tree as files, kept in step with its manifest.

rsync needs files it can stat and read at any offset, which S3 objects are not, so the tree is
copied to local disk and the real rsync daemon serves the copy.

Each version of the manifest becomes a snapshot directory, and the module's path is a symlink to
the newest complete one, replaced with one rename. An rsync connection changes into the directory
the link named when it connected and reads that snapshot alone, so a client never gets an index
file of one version with the data of another. (Updating one tree in place cannot promise that: a
client lists first and reads later, so it could read a new ``repomd.xml`` naming data that its
list, made before the data arrived, does not hold.) A new snapshot reads from S3 only what changed:
every file whose size and mtime the previous snapshot already has is a hard link to it.

Within a snapshot files still land in the publishing order (data, each late tier, symlinks, the
trace file; directories' mtimes last), each under a temporary name renamed into place, so a build
that dies leaves only whole files with their upstream mtimes, and the next build links them instead
of fetching them again::

    DIR/<module>                  symlink to the current snapshot; absent until the first build ends
    DIR/.replica/<module>/<id>/   snapshots: the current one, the one before it (clients connected
                                  before the switch still read it) and a build under way, if any
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mirrorkeeper.aws import S3Client
from mirrorkeeper.config import RsyncModule
from mirrorkeeper.display import human_size
from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.errors import ReplicaFullError
from mirrorkeeper.names import printable
from mirrorkeeper.s3errors import S3Failure, classify, is_missing, s3_errors
from mirrorkeeper.state import MTIME_META, StateStore
from mirrorkeeper.tiers import late_tier

REPLICA_DIR = ".replica"
INCOMING = ".incoming"  # suffix of a snapshot's directory of downloads under way
BLOCK = 4096  # a file takes whole blocks of the disk: what the space check counts
CHUNK = 1024 * 1024
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """What building one snapshot took."""

    fetched: int
    fetched_bytes: int
    linked: int
    seconds: float


class Replica:
    """One module's replica under ``root``: built from the manifest, then kept up with it."""

    def __init__(self, client: S3Client, module: RsyncModule, root: Path, concurrency: int, reserve: int) -> None:
        self.client = client
        self.module = module
        self.state = StateStore(client, module.layout)
        root = root.resolve()  # so that the link's target and the snapshots' paths compare equal
        self.link = root / module.name
        self.snapshots = root / REPLICA_DIR / module.name
        self.concurrency = concurrency
        self.reserve = reserve
        self.version = ""  # the ETag of the manifest the current snapshot was built from ('' none yet)
        self._trace_etag = ""

    @property
    def ready(self) -> bool:
        """True once a complete snapshot is served (a restart serves the last one while it catches up)."""
        return self.link.is_symlink()

    @property
    def current(self) -> Path | None:
        return self.link.resolve() if self.ready else None

    def update(self) -> Applied | None:
        """Build a snapshot when the manifest changed (None when it did not, or none was published yet);
        else only the trace file is refreshed. StorageError and ReplicaFullError leave what is served."""
        meta = self.state.manifest_meta()
        if meta is None:
            return None
        if meta.etag == self.version:
            self._refresh_trace()
            return None
        applied = self._build()
        self.version = meta.etag
        return applied

    # -- building a snapshot

    def _build(self) -> Applied:
        started = time.monotonic()
        with self.state.manifest_entries() as listed:
            entries = list(listed)
        base = self._newest()
        new = self.snapshots / f"{time.time_ns():020d}"
        incoming = new.with_name(new.name + INCOMING)
        incoming.mkdir(parents=True)
        new.mkdir()
        fetch, linked = self._link_unchanged(entries, base, new)
        self._check_space(fetch)
        fetched_bytes = 0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="replica") as pool:
            # Data first, then each tier of index files: what a build that dies leaves is what a sync
            # that dies leaves in S3, and the next build links it.
            for group in _publishing_order(fetch, self.module.late_patterns):
                fetched_bytes += sum(pool.map(lambda entry: self._fetch(entry, new / entry.path, incoming), group))
        for entry in entries:
            if entry.type is EntryType.SYMLINK:
                os.symlink(entry.target or "", new / entry.path)
                os.utime(new / entry.path, (entry.mtime, entry.mtime), follow_symlinks=False)
        self._fetch_trace(new, incoming)
        # Deepest first, after everything inside them was written (which moves a directory's mtime).
        for entry in reversed(entries):
            if entry.type is EntryType.DIR:
                os.utime(new / entry.path, (entry.mtime, entry.mtime))
        shutil.rmtree(incoming)
        previous = self.current
        self._switch(new)
        self._prune(keep={new, previous})
        applied = Applied(len(fetch), fetched_bytes, linked, round(time.monotonic() - started, 3))
        log.info("replica updated", extra={"rsync_module": self.module.name, **vars(applied)})
        return applied

    def _newest(self) -> Path | None:
        """The snapshot to link unchanged files from: the newest, complete or not (a build that died)."""
        if not self.snapshots.is_dir():
            return None
        found = sorted(p for p in self.snapshots.iterdir() if not p.name.endswith(INCOMING) and p.is_dir())
        return found[-1] if found else None

    def _link_unchanged(self, entries: list[Entry], base: Path | None, new: Path) -> tuple[list[Entry], int]:
        """Make every directory, link every file ``base`` has with the manifest's size and mtime; the
        files still to fetch, and how many were linked."""
        fetch: list[Entry] = []
        linked = 0
        for entry in entries:
            if entry.type is EntryType.DIR:
                (new / entry.path).mkdir(parents=True, exist_ok=True)
                continue
            (new / entry.path).parent.mkdir(parents=True, exist_ok=True)
            if entry.type is not EntryType.FILE:
                continue
            if base is not None and _same_file(base / entry.path, entry):
                os.link(base / entry.path, new / entry.path)
                linked += 1
            else:
                fetch.append(entry)
        return fetch, linked

    def _check_space(self, fetch: list[Entry]) -> None:
        needed = sum(-(-entry.size // BLOCK) * BLOCK for entry in fetch)
        free = shutil.disk_usage(self.snapshots).free
        if needed + self.reserve > free:
            raise ReplicaFullError(
                f"the replica directory {self.link.parent} has {human_size(free)} free, and module "
                f"{self.module.name} needs {human_size(needed)} more plus the --replica-reserve of "
                f"{human_size(self.reserve)}: give it a larger disk (EphemeralStorageGiB in the stack)"
            )

    def _fetch(self, entry: Entry, final: Path, incoming: Path) -> int:
        """Download one file to a temporary name, give it the upstream mtime, rename it into place; its
        size (0 when the object is gone: a sync is publishing the next manifest, which drops it)."""
        key = self.module.layout.served_key(entry.path)
        temp = incoming / uuid.uuid4().hex
        with s3_errors(f"read s3://{self.module.layout.bucket}/{key}"):
            try:
                response = self.client.get_object(Bucket=self.module.layout.bucket, Key=key)
            except ClientError as exc:
                if not is_missing(exc):
                    raise
                log.warning("object missing; left to the next manifest", extra={"path": printable(entry.path)})
                return 0
            size = self._write(response, temp)
        mtime = _mtime(response, entry.mtime)
        os.utime(temp, (mtime, mtime))
        os.replace(temp, final)
        return size

    def _write(self, response: Any, temp: Path) -> int:
        size = 0
        try:
            with open(temp, "wb") as out:
                for chunk in response["Body"].iter_chunks(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ReplicaFullError(
                    f"the replica directory {self.link.parent} filled up while module {self.module.name} was "
                    "being built: give it a larger disk (EphemeralStorageGiB in the stack) or a larger "
                    "--replica-reserve"
                ) from None
            raise
        return size

    # -- the trace file: rewritten by every sync, also one that changes nothing else

    def _fetch_trace(self, snapshot: Path, incoming: Path) -> None:
        response = self._get_trace("")
        if response is not None:
            self._place_trace(response, snapshot, incoming)

    def _refresh_trace(self) -> None:
        """One conditional GET; a newer trace replaces the served one with a rename."""
        current = self.current
        response = self._get_trace(self._trace_etag)
        if current is None or response is None:
            return
        incoming = self.snapshots / (current.name + INCOMING)
        incoming.mkdir(exist_ok=True)
        self._place_trace(response, current, incoming)
        shutil.rmtree(incoming)

    def _get_trace(self, etag: str) -> Any:
        key = self.module.layout.served_key(self.module.trace_path)
        condition: dict[str, Any] = {"IfNoneMatch": etag} if etag else {}
        with s3_errors(f"read s3://{self.module.layout.bucket}/{key}"):
            try:
                return self.client.get_object(Bucket=self.module.layout.bucket, Key=key, **condition)
            except ClientError as exc:
                if classify(exc) is S3Failure.NOT_MODIFIED or is_missing(exc):
                    return None
                raise

    def _place_trace(self, response: Any, snapshot: Path, incoming: Path) -> None:
        final = snapshot / self.module.trace_path
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = incoming / uuid.uuid4().hex
        with s3_errors(f"read the trace of module {self.module.name}"):
            self._write(response, temp)
        mtime = _mtime(response, int(time.time()))
        os.utime(temp, (mtime, mtime))
        os.replace(temp, final)
        self._trace_etag = str(response.get("ETag", ""))

    # -- serving a snapshot

    def _switch(self, snapshot: Path) -> None:
        """Point the module at ``snapshot`` with one rename: a connection sees the old tree or the new."""
        temp = self.link.with_name(f".{self.link.name}.{uuid.uuid4().hex}")
        os.symlink(snapshot.relative_to(self.link.parent), temp)
        os.replace(temp, self.link)

    def _prune(self, keep: set[Path | None]) -> None:
        """Remove every snapshot but ``keep``: older ones and builds that died (once linked from)."""
        for path in self.snapshots.iterdir():
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)


def _publishing_order(fetch: list[Entry], tiers: tuple[tuple[str, ...], ...]) -> list[list[Entry]]:
    groups: list[list[Entry]] = [[] for _ in range(len(tiers) + 1)]
    for entry in fetch:
        tier = late_tier(entry.name, tiers)
        groups[0 if tier is None else tier + 1].append(entry)
    return groups


def _same_file(path: Path, entry: Entry) -> bool:
    try:
        found = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and found.st_size == entry.size and int(found.st_mtime) == entry.mtime


def _mtime(response: Any, fallback: int) -> int:
    """The object's upstream mtime, which the sync stores with it (the manifest's, unless a sync has
    replaced the object since: then the next manifest names this one)."""
    try:
        return int(response.get("Metadata", {})[MTIME_META])
    except (KeyError, ValueError):
        return fallback
