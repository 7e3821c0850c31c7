"""The bucket's private state, and mirrorkeeper's own public files: every key, every schema, and how
each is read and written. No other module builds one of these keys or parses one of these documents.

::

    <prefix>state/manifest.jsonl.gz          the published manifest (manifest.py's format), with
                                             ManifestMeta as user metadata       sync writes, all read
    <prefix>state/upstream-listing.jsonl.gz  the last upstream listing (same format)   sync → verify
    <prefix>state/lock.json                  LeaseDoc: one sync at a time          sync (verify reads)
    <prefix>state/runs/<run id>.json         RunReport of each run                   sync → verify,
    <prefix>state/runs/last.json             and of the latest                       announce, mirrors
    <prefix>state/repair.json                RepairList: drift for the next sync to undo  verify → sync
    <prefix>state/failures.json              FailureLog: paths failing run after run, quarantine  sync
    <prefix>state/invalidations.json         EdgeRecord: what the last run that overwrote or deleted
                                             told the edge to forget          sync → serve-http, verify
    <prefix>state/health.json                HealthState: levels, last checks, 14 days    verify
    <prefix>state/.host/mirrors.toml         a deployed host's config file, the stack's
                                             MIRRORKEEPER_CONFIG        make deploy → sync, verify
    <prefix>state/push.json                  PushState: pushes waiting for a run, a start on its
                                             way, the last minute's pushes     push ↔ sync
    <prefix>state/.host/push/seen/<sha256>   a push signature already used (the host's; expired
                                             by the bucket's lifecycle)               push
    <prefix>pub/.mirrorkeeper/trace          our trace file (content.render_trace; its path is the
                                             trace_path setting, layout.DEFAULT_TRACE_PATH)   sync
    <prefix>pub/.mirrorkeeper/status.html    the status page, and status.json        verify

Served objects carry two metadata keys (MTIME_META, SYMLINK_META) that the front ends read back.
docs/architecture.md ("Bucket layout") tells the same story for operators.
"""

from __future__ import annotations

import email.utils
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from botocore.exceptions import BotoCoreError, ClientError

from mirrorkeeper.content import INDEX_CACHE_CONTROL, INDEX_CONTENT_TYPE
from mirrorkeeper.display import iso
from mirrorkeeper.entries import Entry
from mirrorkeeper.errors import MirrorkeeperError, StateConflictError, StorageError
from mirrorkeeper.layout import RESERVED_DIR, MirrorLayout
from mirrorkeeper.manifest import ManifestError, ManifestHeader, Row, read_manifest, read_manifest_rows, write_manifest
from mirrorkeeper.names import url_path
from mirrorkeeper.s3errors import S3Failure, classify, is_conflict, is_missing, s3_errors

if TYPE_CHECKING:
    from mirrorkeeper.aws import S3Client

log = logging.getLogger(__name__)

# -- keys ---------------------------------------------------------------------------------------

MANIFEST = "manifest.jsonl.gz"
LISTING = "upstream-listing.jsonl.gz"
LOCK = "lock.json"
REPAIR = "repair.json"
FAILURES = "failures.json"
HEALTH = "health.json"
INVALIDATIONS = "invalidations.json"
UPSTREAM = "upstream.json"
RUNS = "runs/"
LAST_RUN = RUNS + "last.json"
PUSH = "push.json"
PUSH_SEEN = "push/seen/"  # under the host's own state

HOST_CONFIG = "mirrors.toml"  # under the host's own state (layout.host_state_prefix)

STATUS_HTML_PATH = RESERVED_DIR + "status.html"
STATUS_JSON_PATH = RESERVED_DIR + "status.json"
# Our public files are never kept by a cache: a fresh trace is how clients and probes judge freshness.
FRESH_CACHE_CONTROL = "no-cache, max-age=0"

# -- metadata of served objects -------------------------------------------------------------------

MTIME_META = "mtime"  # x-amz-meta-mtime: upstream mtime, epoch seconds
SYMLINK_META = "symlink-target"  # x-amz-meta-symlink-target: the link's text, percent-encoded


# ManifestMeta's fields as S3 user-metadata names (x-amz-meta-...).
_META_NAMES = {
    "listing_key": "listing-sha256",
    "entries": "mirror-entries",
    "bytes": "mirror-bytes",
    "skipped": "skipped-total",
    "run_id": "run-id",
    "repair": "repair",
    "upstream_owns": "upstream-owns",
}


@dataclass(frozen=True)
class ManifestMeta:
    """User metadata on the published manifest, so the next run can tell "upstream listed exactly
    what this manifest was made from" without reading it (the listing shortcut, docs/sync.md)."""

    listing_key: str = ""  # empty: the next run must compare the long way
    entries: int | None = None
    bytes: int | None = None
    skipped: int | None = None
    run_id: str = ""
    # Set (and listing_key dropped) by the drift check when S3 no longer matches the manifest: the
    # next sync reads the repair list instead of trusting the shortcut.
    repair: bool = False
    published: float = 0.0  # when the manifest was written (S3's LastModified); not stored as metadata
    # Paths of our own trace files that upstream publishes itself (so we do not write ours there).
    upstream_owns: tuple[str, ...] = ()
    etag: str = ""  # which version of the manifest this is (S3's ETag): what serve-rsync follows

    def to_metadata(self) -> dict[str, str]:
        values = {
            "listing_key": self.listing_key,
            "entries": "" if self.entries is None else str(self.entries),
            "bytes": "" if self.bytes is None else str(self.bytes),
            "skipped": "" if self.skipped is None else str(self.skipped),
            "run_id": self.run_id,
            "repair": "1" if self.repair else "",
            "upstream_owns": " ".join(quote(path, safe="/") for path in self.upstream_owns),
        }
        return {_META_NAMES[name]: value for name, value in values.items() if value}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> ManifestMeta:
        def number(name: str) -> int | None:
            try:
                return int(metadata[_META_NAMES[name]])
            except (KeyError, ValueError):
                return None

        return cls(
            listing_key=metadata.get(_META_NAMES["listing_key"], ""),
            entries=number("entries"),
            bytes=number("bytes"),
            skipped=number("skipped"),
            run_id=metadata.get(_META_NAMES["run_id"], ""),
            repair=bool(metadata.get(_META_NAMES["repair"])),
            upstream_owns=tuple(unquote(p) for p in metadata.get(_META_NAMES["upstream_owns"], "").split()),
        )

    @property
    def totals(self) -> tuple[int, int, int] | None:
        """(entries, bytes, skipped) when the run that published the manifest recorded all three."""
        if self.entries is None or self.bytes is None or self.skipped is None:
            return None
        return self.entries, self.bytes, self.skipped


# -- the lease ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseDoc:
    """``state/lock.json``: who holds the sync lease (sync/lease.py runs the protocol). ``expires_at``
    is the holder's own clock, for people; whether the lease has expired is judged by S3's clock:
    ``ttl`` seconds after the object was last written (its LastModified), against the Date of the
    answer that read it, so a holder or a reader with a skewed clock cannot stretch or cut it."""

    owner: str
    host: str
    acquired_at: float
    expires_at: float
    ttl: float

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> LeaseDoc | None:
        """The lease, or None when the object is not one (damaged: treated as expired)."""
        try:
            data = json.loads(body)
            acquired, expires = float(data["acquired_at"]), float(data["expires_at"])
            ttl = float(data.get("ttl", expires - acquired))
            return cls(str(data["owner"]), str(data.get("host", "?")), acquired, expires, ttl)
        except (ValueError, KeyError, TypeError):
            return None


CLOCK_RESOLUTION = 1.0


@dataclass(frozen=True)
class StoredLease:
    """The lease object as read: its document (None when damaged), ETag, and S3's view of time."""

    doc: LeaseDoc | None
    etag: str
    written: float  # LastModified: S3's clock when the holder last wrote (took or renewed) it
    now: float  # the Date of S3's answer

    @property
    def expired(self) -> bool:
        # HTTP dates have whole seconds: a second of grace, so a lease is never cut short by rounding.
        return self.doc is None or self.now - self.written > self.doc.ttl + CLOCK_RESOLUTION

    @property
    def expires(self) -> float:
        """When it expires, by S3's clock."""
        return self.written + (self.doc.ttl + CLOCK_RESOLUTION if self.doc else 0.0)


# -- pushes -------------------------------------------------------------------------------------

# How long a sync that a push started may take to hold its lease (an ECS task: scheduling, pulling
# the image, starting). Meanwhile further pushes wait for it instead of starting more.
START_WINDOW = 600.0
RATE_PERIOD = 60.0  # the rate limit counts the pushes of this many seconds
PUSH_STATE_ATTEMPTS = 10


@dataclass(frozen=True)
class PushState:
    """``state/<path>/push.json``: what pushes ask of the mirror's syncs. The push endpoint and the sync
    change it with conditional writes only (docs/sync.md, "Pushes", tells the protocol).

    ``waiting``: pushes that arrived while a sync ran or was starting, for which no run has begun
    since; ``starting_at``: when a push (or a follow-up) set a sync going that may not hold the lease
    yet, by the writer's clock (the window is minutes, clock skew seconds); ``accepted``: when the
    pushes of the last minute were accepted, for the rate limit; ``revision``: one more at each write."""

    waiting: int = 0
    starting_at: float | None = None
    accepted: tuple[float, ...] = ()
    revision: int = 0

    def starting(self, now: float) -> bool:
        return self.starting_at is not None and now - self.starting_at < START_WINDOW

    def recent(self, now: float) -> tuple[float, ...]:
        return tuple(t for t in self.accepted if now - t < RATE_PERIOD)

    def to_json(self) -> dict[str, Any]:
        return {
            "waiting": self.waiting,
            "starting_at": self.starting_at,
            "accepted": list(self.accepted),
            "revision": self.revision,
        }

    @classmethod
    def from_json(cls, doc: Any) -> PushState:
        """The state, or the empty one when ``doc`` is damaged (the next conditional write replaces it)."""
        try:
            starting = doc.get("starting_at")
            return cls(
                int(doc.get("waiting", 0)),
                float(starting) if starting is not None else None,
                tuple(float(t) for t in doc.get("accepted", ())),
                int(doc.get("revision", 0)),
            )
        except (AttributeError, TypeError, ValueError):
            return cls()


# -- run reports --------------------------------------------------------------------------------


class SyncResult(StrEnum):
    SUCCESS = "success"
    NO_CHANGE = "no-change"
    UPSTREAM_UNCHANGED = "upstream-unchanged"  # its trace was the last success's: nothing listed (exit 0)
    PARTIAL = "partial"  # published; some paths skipped (exit 5)
    DELETIONS_HELD = "deletions-held"  # published; the deletion guard held the deletions (exit 4)
    UPSTREAM_BUSY = "upstream-busy"  # upstream mid-update: nothing beyond data published (exit 6)
    DRY_RUN = "dry-run"
    FAILED = "failed"
    REFUSED = "refused"
    LOCKED = "locked"


def new_run_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + uuid.uuid4().hex[:6]


@dataclass
class RunReport:
    """What one sync did: ``state/runs/<run id>.json`` and ``state/runs/last.json``."""

    run_id: str
    upstream: str
    started: float
    finished: float = 0.0
    result: SyncResult = SyncResult.FAILED
    exit_code: int = 1
    error: str = ""
    phase: str = ""
    plan: dict[str, int] = field(default_factory=dict)
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    deleted_objects: int = 0
    repaired: int = 0  # objects uploaded again or deleted because the drift check asked (repair.json)
    index_pages: int = 0
    links: int = 0
    vanished: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # names that cannot be mirrored at all
    skipped_total: int = 0
    # Paths that could not be fetched or stored this run ({path, reason}): kept as published before,
    # retried by the next run (quarantined ones daily).
    failed: list[dict[str, str]] = field(default_factory=list)
    failed_total: int = 0
    held_indexes: list[dict[str, str]] = field(default_factory=list)  # {path, because}: index files kept back
    held_deletions: int = 0  # deletions the guard (or a held index) kept back: still published
    held_deletion_examples: list[str] = field(default_factory=list)
    held_because: str = ""
    quarantined: list[dict[str, Any]] = field(default_factory=list)  # {path, reason, since}
    newly_quarantined: list[str] = field(default_factory=list)
    streamed_files: int = 0  # files larger than the staging budget, uploaded as they arrived
    lease_renewals: int = 0
    s3_requests: int = 0
    s3_requests_by_operation: dict[str, int] = field(default_factory=dict)
    mirror_entries: int = 0
    mirror_bytes: int = 0
    # Set when upstream listed exactly what the published manifest was made from, so this run
    # neither read the manifest nor planned: the run that published it (its report lists the
    # skipped names).
    unchanged_since: str = ""
    invalidation: dict[str, Any] = field(default_factory=dict)  # EdgeRecord.summary(); {} when none
    trigger: str = ""  # manual, cron or push
    # Upstream's trace (--upstream-trace): {path, sha256, serial, date} as fetched, or {path, problem}.
    upstream_trace: dict[str, Any] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)  # what showed upstream mid-update, attempt by attempt

    @property
    def duration(self) -> float:
        return round(max(self.finished - self.started, 0.0), 3)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["duration"] = self.duration
        doc["started_iso"] = iso(self.started) if self.started else ""
        doc["finished_iso"] = iso(self.finished) if self.finished else ""
        return doc

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, doc: Any) -> RunReport | None:
        """The report, or None when ``doc`` is not a finished run's report (missing, older, damaged)."""
        if not isinstance(doc, dict) or not doc.get("finished"):
            return None
        try:
            known = {name: doc[name] for name in cls.__dataclass_fields__ if name in doc}
            report = cls(**known)
            report.result = SyncResult(report.result)
            report.started, report.finished = float(report.started), float(report.finished)
            report.exit_code = int(report.exit_code)
            for name in ("uploaded_files", "uploaded_bytes", "deleted_objects", "s3_requests"):
                setattr(report, name, int(getattr(report, name)))
        except (TypeError, ValueError):
            return None
        return report


@dataclass
class UpstreamState:
    """``state/upstream.json``: upstream's trace as the last fully successful run saw it (with
    --upstream-trace), when upstream was last listed in full, and the epoch of the trace we published
    then. A run whose fetched trace is byte-identical, within --full-listing-every, ends at once; a
    verify vouches for a served trace of that epoch until upstream's trace changes. Deleted by a run
    that ends otherwise and by the drift check's repair request, so the next run lists in full."""

    trace_path: str
    sha256: str
    listed_at: float
    published_epoch: int
    serial: str = ""
    date: float | None = None  # upstream's own time in its trace

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, **asdict(self)}

    @classmethod
    def from_json(cls, doc: Any) -> UpstreamState | None:
        if not isinstance(doc, dict) or doc.get("version") != 1:
            return None
        try:
            date = doc.get("date")
            return cls(
                str(doc["trace_path"]),
                str(doc["sha256"]),
                float(doc["listed_at"]),
                int(doc["published_epoch"]),
                str(doc.get("serial", "")),
                float(date) if date is not None else None,
            )
        except (KeyError, TypeError, ValueError):
            return None


# -- the repair list ----------------------------------------------------------------------------

REPAIR_LIMIT = 100_000  # paths a repair list holds; a larger drift is repaired over several syncs


@dataclass
class RepairList:
    """``state/repair.json``: what the next sync must fix besides upstream's changes: published paths
    whose object is missing or of the wrong size (uploaded again) and served keys the manifest does
    not know (deleted, unless upstream has them by then)."""

    reupload: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    complete: bool = True

    def add(self, into: list[str], item: str) -> None:
        if len(self.reupload) + len(self.delete) < REPAIR_LIMIT:
            into.append(item)
        else:
            self.complete = False

    def __bool__(self) -> bool:
        return bool(self.reupload or self.delete)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> RepairList:
        doc = doc if isinstance(doc, dict) else {}
        return cls(
            [str(p) for p in doc.get("reupload", ()) if isinstance(p, str)],
            [str(k) for k in doc.get("delete", ()) if isinstance(k, str)],
            bool(doc.get("complete", True)),
        )


# -- paths that keep failing -------------------------------------------------------------------

FAILURE_LOG_LIMIT = 10_000  # paths tracked; a larger failure is reported by count, not tracked by path


@dataclass
class PathFailure:
    reason: str
    count: int  # runs in a row that failed this way
    first: float
    last: float
    quarantined: float | None = None  # since when it is only retried daily
    tried: float = 0.0  # the last run that tried it


@dataclass
class FailureLog:
    """``state/failures.json``: paths that failed to be fetched or stored, run after run. A path that
    fails the same way ``quarantine_after`` runs in a row is quarantined: not retried every run,
    reported, alerted once, retried daily. A path that succeeds (or leaves upstream) is forgotten."""

    paths: dict[str, PathFailure] = field(default_factory=dict)

    def skip_now(self, path: str, now: float, retry_every: float) -> bool:
        """True for a quarantined path whose daily retry is not due: this run leaves it alone."""
        found = self.paths.get(path)
        return found is not None and found.quarantined is not None and now - found.tried < retry_every

    def record(self, path: str, reason: str, now: float, quarantine_after: int) -> bool:
        """Note a failure; True when it puts the path in quarantine."""
        found = self.paths.get(path)
        if found is None or found.reason != reason:
            if found is None and len(self.paths) >= FAILURE_LOG_LIMIT:
                return False
            found = self.paths[path] = PathFailure(reason, 0, now, now)
        found.count += 1
        found.last = found.tried = now
        if found.quarantined is None and found.count >= quarantine_after:
            found.quarantined = now
            return True
        return False

    def forget(self, paths: Iterable[str]) -> None:
        for path in paths:
            self.paths.pop(path, None)

    def quarantined(self) -> dict[str, PathFailure]:
        return {p: f for p, f in self.paths.items() if f.quarantined is not None}

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "paths": {p: asdict(f) for p, f in sorted(self.paths.items())}}

    @classmethod
    def from_json(cls, doc: Any) -> FailureLog:
        """The stored log; a damaged one starts afresh (it only delays quarantine)."""
        try:
            return cls({str(p): PathFailure(**f) for p, f in doc["paths"].items()})
        except (TypeError, KeyError, AttributeError):
            return cls()


# -- what a run told the edge to forget ---------------------------------------------------------


class EdgeStatus(StrEnum):
    COMPLETED = "completed"  # CloudFront reported it done: no edge location keeps the old copies
    IN_PROGRESS = "in-progress"  # accepted, not seen done within the run's wait
    THROTTLED = "throttled"  # refused for too many invalidations in progress, all through the wait
    FAILED = "failed"  # refused otherwise (the role, the distribution id, the network): see ``error``
    LOCAL = "local"  # no distribution configured: only mirrorkeeper's own front ends drop them


@dataclass
class EdgeBatch:
    """One batch of paths a run asked the edge to forget, as CloudFront URL paths (names.url_path); a
    path ending in ``*`` is a wildcard covering every path that begins with what precedes it."""

    phase: str  # "data" (sent before the index tiers are published) or "final" (after the deletions)
    paths: list[str]
    status: EdgeStatus = EdgeStatus.LOCAL
    id: str = ""  # CloudFront's invalidation id
    created: float = 0.0
    completed: float = 0.0  # when the run saw CloudFront report it done (0: not seen)
    error: str = ""

    @property
    def wildcards(self) -> int:
        return sum(path.endswith("*") for path in self.paths)

    @property
    def lost(self) -> bool:
        """CloudFront never took it: the next run that touches these paths, or their TTL, covers them."""
        return self.status in (EdgeStatus.THROTTLED, EdgeStatus.FAILED)

    def covers(self, url: str) -> bool:
        return any(url == path or (path.endswith("*") and url.startswith(path[:-1])) for path in self.paths)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "path_count": len(self.paths), "wildcards": self.wildcards}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EdgeBatch:
        return cls(
            str(doc["phase"]),
            [str(path) for path in doc["paths"]],
            EdgeStatus(doc.get("status", EdgeStatus.LOCAL)),
            str(doc.get("id", "")),
            float(doc.get("created", 0.0)),
            float(doc.get("completed", 0.0)),
            str(doc.get("error", "")),
        )


@dataclass
class EdgeRecord:
    """``state/invalidations.json``: the batches of the last run that overwrote or deleted served
    objects, rewritten after each batch. serve-http drops the same paths from its cache when the record
    changes; verify fails a stale copy that a completed batch covered before the probe."""

    run_id: str
    # The run whose record this one replaced: a reader that did not see that one missed a run's batches.
    previous: str = ""
    distribution: str = ""
    batches: list[EdgeBatch] = field(default_factory=list)
    # The mirror's path on a host ('' for a host of one): the batches' paths start at the host's root.
    root: str = ""

    def invalidated(self, path: str, before: float) -> bool:
        """True when a batch covering mirror path ``path`` was seen complete at ``before`` or earlier."""
        url = url_path(f"{self.root}/{path}" if self.root else path)
        return any(0 < batch.completed <= before and batch.covers(url) for batch in self.batches)

    def summary(self) -> dict[str, Any]:
        """The run report's ``invalidation`` section."""
        return {
            "distribution": self.distribution,
            "paths": sum(len(batch.paths) for batch in self.batches),
            "wildcards": sum(batch.wildcards for batch in self.batches),
            "completed": bool(self.batches) and all(b.status is EdgeStatus.COMPLETED for b in self.batches),
            "not_invalidated": sum(len(batch.paths) for batch in self.batches if batch.lost),
            "batches": [batch.to_json() for batch in self.batches],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "run_id": self.run_id,
            "previous": self.previous,
            "distribution": self.distribution,
            "batches": [batch.to_json() for batch in self.batches],
            "root": self.root,
        }

    @classmethod
    def from_json(cls, doc: Any) -> EdgeRecord | None:
        """The record, or None when ``doc`` is not one (a reader then assumes it missed a run)."""
        try:
            return cls(
                str(doc["run_id"]),
                str(doc.get("previous", "")),
                str(doc.get("distribution", "")),
                [EdgeBatch.from_json(batch) for batch in doc["batches"]],
                str(doc.get("root", "")),
            )
        except (TypeError, KeyError, ValueError, AttributeError):
            return None


# -- health kept between verify runs ------------------------------------------------------------

HEALTH_VERSION = 1


class Level(IntEnum):
    """Health levels, ordered so that ``max`` is 'the worst'; the value is the HealthLevel metric."""

    OK = 0
    DEGRADED = 1
    DOWN = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Level:
        return cls[text.upper()]


@dataclass(frozen=True)
class SyncOutcome:
    """How the last sync ended, from its run report or from the ECS task-stopped event."""

    finished: float
    ok: bool
    exit_code: int | None
    reason: str
    source: str  # "run-report" or "ecs-event"
    run_id: str = ""
    duration: float = 0.0
    uploaded_bytes: int = 0
    files_changed: int = 0
    s3_requests: int = 0
    # What the status page lists until a later run clears it (capped: the run report has them all).
    failed: tuple[tuple[str, str], ...] = ()  # (path, reason)
    quarantined: tuple[tuple[str, str], ...] = ()
    newly_quarantined: tuple[str, ...] = ()
    held_deletions: int = 0
    held_examples: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SyncOutcome:
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        for name in ("failed", "quarantined"):
            known[name] = tuple(tuple(pair) for pair in known.get(name, ()))
        for name in ("newly_quarantined", "held_examples"):
            known[name] = tuple(known.get(name, ()))
        return cls(**known)


@dataclass
class ProtocolStatus:
    """The last probe of one protocol, as the status page shows it."""

    url: str
    level: str
    trace_epoch: int | None
    passed: int
    failed: int
    missing_check: bool | None
    latency_ms: float | None
    reasons: list[str]
    # When what it served was known current: its trace's time, or later if a run vouched for that trace.
    current_at: float | None = None

    @property
    def known_current(self) -> float | None:
        return self.current_at if self.current_at is not None else self.trace_epoch


@dataclass
class HistoryPoint:
    t: float
    overall: str
    levels: dict[str, str]
    freshness: dict[str, float | None]
    completion: float | None


@dataclass
class HealthState:
    """``state/health.json``: the levels last seen, when people were last told, the last sync's
    outcome, the last checks (for the status page) and 14 days of history."""

    levels: dict[str, str] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)
    last_notified: float = 0.0
    last_sync: SyncOutcome | None = None
    last_report_run_id: str = ""
    checked_at: float = 0.0
    protocols: dict[str, ProtocolStatus] = field(default_factory=dict)
    mirror_reasons: list[str] = field(default_factory=list)
    completion: float | None = None
    drift: int | None = None
    lag: int | None = None
    history: list[HistoryPoint] = field(default_factory=list)
    # The last check's figures (mirrorkeeper.verify.metrics.mirror_figures): the host's metrics count
    # a mirror that this run did not check by them.
    figures: dict[str, Any] = field(default_factory=dict)
    # Upstream's own trace (its date and serial), shown beside ours: {} without --upstream-trace.
    upstream: dict[str, Any] = field(default_factory=dict)

    def level(self, component: str) -> Level:
        return Level.parse(self.levels.get(component, "ok"))

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["version"] = HEALTH_VERSION
        doc["last_sync"] = self.last_sync.to_json() if self.last_sync else None
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> HealthState:
        """The stored state; an absent, older or damaged document starts afresh (history is a
        convenience, alerts must keep working)."""
        if not doc or doc.get("version") != HEALTH_VERSION:
            return cls()
        try:
            return cls(
                levels=dict(doc.get("levels", {})),
                since=dict(doc.get("since", {})),
                last_notified=float(doc.get("last_notified", 0.0)),
                last_sync=SyncOutcome.from_json(doc["last_sync"]) if doc.get("last_sync") else None,
                last_report_run_id=str(doc.get("last_report_run_id", "")),
                checked_at=float(doc.get("checked_at", 0.0)),
                protocols={k: ProtocolStatus(**v) for k, v in doc.get("protocols", {}).items()},
                mirror_reasons=list(doc.get("mirror_reasons", [])),
                completion=doc.get("completion"),
                drift=doc.get("drift"),
                lag=doc.get("lag"),
                history=[HistoryPoint(**p) for p in doc.get("history", [])],
                figures=dict(doc.get("figures") or {}),
                upstream=dict(doc.get("upstream") or {}),
            )
        except (TypeError, ValueError, KeyError):
            return cls()


# -- reading and writing ------------------------------------------------------------------------


def host_config_key(layout: MirrorLayout) -> str:
    """Where a deployed host keeps its config file: `make deploy` puts it there, and the stack's tasks
    and functions read it (MIRRORKEEPER_CONFIG, s3://BUCKET/KEY)."""
    return layout.host_state_prefix + HOST_CONFIG


def _json_body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


class StateStore:
    """Every read and write of the objects above, for one mirror's layout."""

    def __init__(self, client: S3Client, layout: MirrorLayout) -> None:
        self.client = client
        self.layout = layout
        self.bucket = layout.bucket

    # -- keys

    def key(self, name: str) -> str:
        return self.layout.state_prefix + name

    @property
    def manifest_key(self) -> str:
        return self.key(MANIFEST)

    @property
    def listing_key(self) -> str:
        return self.key(LISTING)

    @property
    def lock_key(self) -> str:
        return self.key(LOCK)

    @property
    def repair_key(self) -> str:
        return self.key(REPAIR)

    @property
    def health_key(self) -> str:
        return self.key(HEALTH)

    @property
    def last_run_key(self) -> str:
        return self.key(LAST_RUN)

    @property
    def edge_key(self) -> str:
        return self.key(INVALIDATIONS)

    def run_report_key(self, run_id: str) -> str:
        return self.key(f"{RUNS}{run_id}.json")

    @property
    def push_key(self) -> str:
        return self.key(PUSH)

    def push_seen_key(self, digest: str) -> str:
        return self.layout.host_state_prefix + PUSH_SEEN + digest

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _get(self, key: str) -> Any:
        """GetObject's response, or None when the key does not exist; any other failure (after
        botocore's retries) is a StorageError that says what to check."""
        with s3_errors(f"read {self._url(key)}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise

    def _read_body(self, key: str) -> bytes | None:
        response = self._get(key)
        if response is None:
            return None
        with s3_errors(f"read {self._url(key)}"):
            return bytes(response["Body"].read())

    def _put(self, key: str, body: bytes, content_type: str = "application/json", **extra: Any) -> Any:
        with s3_errors(f"write {self._url(key)}"):
            return self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, **extra)

    # -- the manifest and the upstream listing

    def manifest_meta(self) -> ManifestMeta | None:
        """The published manifest's metadata (one HEAD, the body stays unread); None when there is none."""
        key = self.manifest_key
        with s3_errors(f"read the manifest {self._url(key)}"):
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise
        meta = ManifestMeta.from_metadata(dict(response.get("Metadata", {})))
        return replace(meta, published=response["LastModified"].timestamp(), etag=str(response.get("ETag", "")))

    @contextmanager
    def manifest_entries(self) -> Iterator[Iterator[Entry]]:
        """Stream the published manifest's entries; empty when none was ever published."""
        key = self.manifest_key
        response = self._get(key)
        if response is None:
            yield iter(())
            return
        body = response["Body"]
        damaged = (
            f"the manifest {self._url(key)} is damaged ({{}}); restore it from S3 versioning or delete it to "
            "force a full comparison"
        )
        try:
            _, entries = read_manifest(body)
            yield _reraise_damage(entries, damaged)
        except ManifestError as exc:
            raise StorageError(damaged.format(exc)) from None
        finally:
            body.close()

    @contextmanager
    def manifest_rows(self, key: str) -> Iterator[tuple[ManifestHeader, Iterator[Row]] | None]:
        """Stream a manifest-format file's rows (the manifest or the listing); None when it does not exist."""
        response = self._get(key)
        if response is None:
            yield None
            return
        body = response["Body"]
        try:
            yield read_manifest_rows(body)
        except ManifestError as exc:
            raise StorageError(f"{self._url(key)} is damaged ({exc}); the next successful sync rewrites it") from None
        finally:
            body.close()

    def put_manifest(
        self, key: str, header: ManifestHeader, entries: Iterable[Entry], meta: ManifestMeta | None = None
    ) -> int:
        """Write a manifest-format file (spooled to disk first: it can be larger than memory)."""
        with tempfile.TemporaryFile() as spool:
            count = write_manifest(spool, header, entries)
            spool.seek(0)
            with s3_errors(f"write {key}"):
                self.client.upload_fileobj(
                    spool,
                    self.bucket,
                    key,
                    ExtraArgs={
                        "ContentType": "application/gzip",
                        "ChecksumAlgorithm": "SHA256",
                        "Metadata": (meta or ManifestMeta()).to_metadata(),
                    },
                )
        return count

    def flag_manifest_for_repair(self) -> None:
        """Mark the published manifest so the next sync reads the repair list: drop the listing key
        that lets a sync skip planning, set ``repair``. A copy onto itself, only if the manifest is
        still the one we diffed against (a sync that publishes meanwhile wins)."""
        key = self.manifest_key
        with s3_errors(f"read {self._url(key)}"):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        meta = ManifestMeta.from_metadata(dict(head.get("Metadata", {})))
        if meta.repair:
            return
        flagged = replace(meta, listing_key="", repair=True)
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                CopySourceIfMatch=head["ETag"],
                MetadataDirective="REPLACE",
                Metadata=flagged.to_metadata(),
                ContentType=head.get("ContentType", "application/gzip"),
            )
        except ClientError as exc:
            if not is_conflict(exc):
                with s3_errors(f"mark {self._url(key)} for repair"):
                    raise

    # -- the lease

    def read_lease(self) -> StoredLease | None:
        """The lease as stored, or None when nobody holds one."""
        response = self._get(self.lock_key)
        if response is None:
            return None
        with s3_errors(f"read {self._url(self.lock_key)}"):
            body = response["Body"].read()
        written = response["LastModified"].timestamp()
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
        except (TypeError, ValueError):
            now = time.time()
        return StoredLease(LeaseDoc.from_bytes(body), str(response["ETag"]), written, now)

    def write_lease(self, doc: LeaseDoc, replacing: str | None = None) -> str | None:
        """Create the lease (``replacing`` None: only if there is none) or replace the version whose
        ETag is ``replacing``. The new ETag, or None when another run got there first."""
        condition: dict[str, Any] = {"IfNoneMatch": "*"} if replacing is None else {"IfMatch": replacing}
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=self.lock_key, Body=doc.to_bytes(), ContentType="application/json", **condition
            )
        except ClientError as exc:
            if is_conflict(exc):
                return None
            if classify(exc) is S3Failure.NO_BUCKET:
                # Taking the lock is a run's first request: it doubles as the bucket check.
                raise StorageError(
                    f"bucket {self.bucket!r} is not usable (NoSuchBucket); create it or fix --bucket"
                ) from None
            raise StorageError(f"cannot write the sync lock {self._url(self.lock_key)}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach S3 to take the sync lock: {exc}") from None
        return str(response["ETag"])

    def delete_lease(self, etag: str) -> None:
        """Release the lease we hold; a failure only logs (the lease expires by itself)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.lock_key, IfMatch=etag)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not release the sync lock; it expires by itself", extra={"error": str(exc)})

    # -- run reports

    def write_run_report(self, report: RunReport, alongside: Callable[[], None] | None = None) -> None:
        """Store the report under its id and as ``last.json``, both at once, running ``alongside``
        meanwhile (a run with nothing to do is short enough for each round trip to show). A failed
        write is logged, never raised: the run's outcome stands without its report."""
        body = report.to_bytes()
        with ThreadPoolExecutor(2, thread_name_prefix="report") as writer:
            copies = [
                writer.submit(self._put, key, body) for key in (self.run_report_key(report.run_id), self.last_run_key)
            ]
            if alongside is not None:
                alongside()
            for copy in copies:
                try:
                    copy.result()
                except MirrorkeeperError as exc:
                    log.error("could not store the run report", extra={"error": str(exc)})

    def last_run_report(self) -> RunReport | None:
        """The latest run's report; None when no run finished yet or the report is unreadable."""
        body = self._read_body(self.last_run_key)
        if body is None:
            return None
        try:
            return RunReport.from_json(json.loads(body))
        except ValueError:
            return None

    # -- what the edge was told to forget

    def write_edge_record(self, record: EdgeRecord) -> None:
        self._put(self.edge_key, _json_body(record.to_json()))

    def edge_record(self) -> EdgeRecord | None:
        """The last run's record; None when no run overwrote or deleted anything yet, or it is unreadable."""
        changed = self.edge_record_since("")
        return changed[0] if changed else None

    def edge_record_since(self, etag: str) -> tuple[EdgeRecord | None, str] | None:
        """The record and its ETag, or None while it is still the version ``etag`` names: one
        conditional GET, which S3 answers with a bodiless 304 when nothing changed. (None, "") when
        there is no record."""
        key = self.edge_key
        condition: dict[str, Any] = {"IfNoneMatch": etag} if etag else {}
        with s3_errors(f"read {self._url(key)}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key, **condition)
                body = response["Body"].read()
            except ClientError as exc:
                if classify(exc) is S3Failure.NOT_MODIFIED:
                    return None
                if is_missing(exc):
                    return None, ""
                raise
        try:
            record = EdgeRecord.from_json(json.loads(body))
        except ValueError:
            record = None
        return record, str(response.get("ETag", ""))

    # -- the repair list

    def repair_list(self) -> RepairList:
        """The drift check's repair list; empty when there is none or it is unreadable (the next
        drift check writes a new one, and a sync needs none to be correct)."""
        body = self._read_body(self.repair_key)
        try:
            return RepairList.from_json(json.loads(body)) if body is not None else RepairList()
        except ValueError:
            return RepairList()

    def write_repair_list(self, repair: RepairList | None) -> None:
        """Write the repair list, or make sure there is none when ``repair`` is empty or None. A
        repair needs a full run: the trace shortcut is dropped with it."""
        if repair:
            self._put(self.repair_key, _json_body(repair.to_json()))
            self.forget_upstream()
        else:
            self.delete_repair_list()

    def delete_repair_list(self) -> None:
        with s3_errors(f"delete {self._url(self.repair_key)}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.repair_key)

    # -- upstream's trace as the last success saw it

    @property
    def upstream_key(self) -> str:
        return self.key(UPSTREAM)

    def read_upstream(self) -> UpstreamState | None:
        body = self._read_body(self.upstream_key)
        try:
            return UpstreamState.from_json(json.loads(body)) if body is not None else None
        except ValueError:
            return None

    def write_upstream(self, upstream: UpstreamState) -> None:
        self._put(self.upstream_key, _json_body(upstream.to_json()))

    def forget_upstream(self) -> None:
        with s3_errors(f"delete {self._url(self.upstream_key)}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.upstream_key)

    # -- failing paths

    def read_failures(self) -> FailureLog:
        body = self._read_body(self.key(FAILURES))
        try:
            return FailureLog.from_json(json.loads(body)) if body is not None else FailureLog()
        except ValueError:
            return FailureLog()

    def write_failures(self, failures: FailureLog) -> None:
        if failures.paths:
            self._put(self.key(FAILURES), _json_body(failures.to_json()))
        else:
            with s3_errors(f"delete {self._url(self.key(FAILURES))}"):
                self.client.delete_object(Bucket=self.bucket, Key=self.key(FAILURES))

    # -- health

    def read_health(self) -> tuple[HealthState, str | None]:
        """The stored health and its ETag (None when there is none yet), for :meth:`write_health`."""
        response = self._get(self.health_key)
        if response is None:
            return HealthState(), None
        with s3_errors(f"read {self._url(self.health_key)}"):
            body = response["Body"].read()
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise StorageError(f"{self._url(self.health_key)} is not JSON ({exc}); delete it to start afresh") from None
        if not isinstance(doc, dict):
            raise StorageError(f"{self._url(self.health_key)} is not a JSON object; delete it to start afresh")
        return HealthState.from_json(doc), str(response.get("ETag", "")) or None

    def write_health(self, state: HealthState, expected_etag: str | None) -> None:
        """Write only if the stored health is still what we read (None: still absent), so two verify
        runs at once cannot silently lose each other's history: StateConflictError otherwise."""
        condition: dict[str, Any] = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
        if not self._put_unless_changed(self.health_key, _json_body(state.to_json()), condition):
            raise StateConflictError(f"{self._url(self.health_key)} changed while we worked on it")

    # -- pushes

    def read_push_state(self) -> tuple[PushState, str | None]:
        """The mirror's push state and its ETag (None when there is none yet)."""
        response = self._get(self.push_key)
        if response is None:
            return PushState(), None
        with s3_errors(f"read {self._url(self.push_key)}"):
            body = response["Body"].read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        return PushState.from_json(doc), str(response["ETag"])

    def change_push_state(self, change: Callable[[PushState], PushState | None]) -> None:
        """Apply ``change`` to the push state as stored (None from it: leave the state as it is), written
        only if the stored state is still the one read; when another writer got there first, read again
        and apply it again. Its writers are a mirror's pushes (a few a minute) and one sync, so a write
        seldom loses twice. Every write bumps the revision: a write of the same fields must change the
        ETag too, or a writer holding the old one would not notice it."""
        for _ in range(PUSH_STATE_ATTEMPTS):
            current, etag = self.read_push_state()
            changed = change(current)
            if changed is None:
                return
            condition: dict[str, Any] = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            body = _json_body(replace(changed, revision=current.revision + 1).to_json())
            if self._put_unless_changed(self.push_key, body, condition):
                return
        raise StateConflictError(
            f"{self._url(self.push_key)} kept changing under {PUSH_STATE_ATTEMPTS} attempts to update it"
        )

    def record_push_signature(self, digest: str) -> bool:
        """Mark a push signature (its SHA-256, ``digest``) used, host-wide; False when it already was."""
        return self._put_unless_changed(self.push_seen_key(digest), b"", {"IfNoneMatch": "*"})

    def _put_unless_changed(self, key: str, body: bytes, condition: dict[str, Any]) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition)
        except (ClientError, BotoCoreError) as exc:
            if is_conflict(exc):
                return False
            with s3_errors(f"write {self._url(key)}"):
                raise
        return True

    # -- our public files

    def published_at(self, path: str) -> float | None:
        """When the served file of ours at ``path`` (the trace) was written: its mtime, or None."""
        key = self.layout.served_key(path)
        with s3_errors(f"read {self._url(key)}"):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise
        try:
            return float(head.get("Metadata", {})[MTIME_META])
        except (KeyError, ValueError):
            return float(head["LastModified"].timestamp())

    def publish_page(self, directory: str, page: bytes) -> None:
        """A directory's index page of ours (the host's front page: directory '')."""
        key = self.layout.directory_key(directory)
        self._put(key, page, INDEX_CONTENT_TYPE, CacheControl=INDEX_CACHE_CONTROL)

    def publish(self, path: str, body: bytes, content_type: str) -> None:
        """Put a file of ours (the status page) into the served tree, never cached for long."""
        self._put(self.layout.served_key(path), body, content_type, CacheControl=FRESH_CACHE_CONTROL)


def _reraise_damage(entries: Iterator[Entry], message: str) -> Iterator[Entry]:
    try:
        yield from entries
    except ManifestError as exc:
        raise StorageError(message.format(exc)) from None
