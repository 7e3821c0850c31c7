"""No stale copies at the edge: what a run overwrote or deleted, sent to CloudFront as invalidations.

A run sends at most two batches (docs/sync.md, "Invalidation"): the data files it overwrote, before
the index tiers that name them are published, and, after the deletions, everything else it
overwrote or deleted (index files, symlinks, directory pages, deleted objects). New objects are
never sent: no cache can hold a copy of them.

CloudFront bills every path past a monthly allowance, a wildcard as one, and allows 3,000 file
paths and 15 wildcards in progress per distribution. So a directory with more than WILDCARD_AFTER
changed entries is sent as ``/dir/*``, and a batch that would still exceed either limit is
coarsened a directory level at a time, up to ``/*``. Nothing here fails a run: a batch CloudFront
will not take is reported and logged, and the next run that replaces those paths, or their TTL,
covers them.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mirrorkeeper.errors import StorageError
from mirrorkeeper.names import url_path
from mirrorkeeper.s3errors import S3Failure, classify, error_code
from mirrorkeeper.state import EdgeBatch, EdgeStatus

log = logging.getLogger(__name__)

# A directory with more changed entries than this is invalidated as one wildcard. Past five it is a
# repository's metadata being regenerated (repodata/, dists/*/binary-*/): one path instead of six or
# more, while one README or checksum file changed in place stays a path of its own. What a wildcard
# also drops is refetched from S3 at the next request, at S3's GET price (the transfer to CloudFront
# is free); a lower threshold would turn any run touching sixteen directories into wildcards over
# CloudFront's limit of fifteen in progress.
WILDCARD_AFTER = 5
MAX_FILE_PATHS = 3000  # CloudFront: file paths in progress per distribution
MAX_WILDCARDS = 15  # CloudFront: wildcard paths in progress per distribution
FIRST_BACKOFF = 2.0  # seconds before asking again while too many invalidations are in progress
MAX_BACKOFF = 30.0
FIRST_POLL = 2.0  # seconds before the first GetInvalidation; then twice as long, up to MAX_POLL
MAX_POLL = 15.0


def edge_path(relative: str) -> str:
    """The invalidation path of a served object, by its key relative to the served prefix ('dir/' a
    directory's page, '' the root's). A '*' in a name would be read as a wildcard, so the path ends
    after its first '*': a wildcard that covers the name (and the neighbours sharing its prefix)."""
    url = url_path(relative)
    star = url.find("*")
    return url if star < 0 else url[: star + 1]


def _directory(url: str) -> str:
    """The directory a path is listed in ('/a/' for '/a/b' and for '/a/b/'); '' for the root page."""
    if url == "/":
        return ""
    return url[: url.rstrip("/").rfind("/") + 1]


def _segments(url: str) -> list[str]:
    """The directories above what ``url`` names; for a directory wildcard ('/a/b/*'), that directory's."""
    covered = url[:-1] if url.endswith("/*") else _directory(url)
    return covered.strip("/").split("/") if covered.strip("/") else []


def _subsumed(paths: set[str]) -> list[str]:
    """``paths`` without those a wildcard among them covers. Sorted with each wildcard under its
    prefix, everything a wildcard covers follows it directly. Only what is longer than the prefix
    counts as covered ('/a/' stays beside '/a/*'): that a wildcard matches no character at all is
    not something to bet a stale index page on."""
    kept: list[str] = []
    cover: str | None = None
    for path in sorted(paths, key=lambda p: (p[:-1], 0) if p.endswith("*") else (p, 1)):
        prefix = path[:-1] if path.endswith("*") else path
        if cover is not None and prefix.startswith(cover) and len(prefix) > len(cover):
            continue
        kept.append(path)
        if path.endswith("*"):
            cover = prefix
    return kept


def within_limits(paths: list[str]) -> bool:
    wildcards = sum(path.endswith("*") for path in paths)
    return wildcards <= MAX_WILDCARDS and len(paths) - wildcards <= MAX_FILE_PATHS


def coarsened(paths: list[str], floor: int = 0) -> list[str]:
    """``paths`` if CloudFront can have them in progress at once; otherwise everything below the
    deepest directory level that makes them fit, as one wildcard per directory of that level, never
    above level ``floor`` (a mirror of a host: its own directory, not the other mirrors')."""
    level = max((len(_segments(path)) for path in paths), default=0)
    while not within_limits(paths) and level >= floor:
        paths = _subsumed({_coarser(path, level) for path in paths})
        level -= 1
    return paths


def _coarser(path: str, level: int) -> str:
    """The wildcard of ``path``'s ancestor directory at ``level`` when ``path`` lies below it."""
    parts = _segments(path)
    if len(parts) < level:
        return path
    directory = "/" + "".join(part + "/" for part in parts[:level])
    return directory + "*" if len(path) > len(directory) else path


class EdgePaths:
    """The paths of the next batch, by directory. A directory past ``wildcard_after`` becomes one
    wildcard and forgets their names, so a run that replaced every file holds a wildcard per
    directory, not a path per file. Upload threads add to it."""

    def __init__(self, wildcard_after: int = WILDCARD_AFTER, floor: int = 0) -> None:
        self.wildcard_after = wildcard_after
        self.floor = floor  # the depth of the mirror's own directory: no wildcard reaches above it
        self._lock = threading.Lock()
        self._listed: dict[str, set[str]] = {}
        self._wild: set[str] = set()

    def add(self, relative: str) -> None:
        """A served object, by its key relative to the host's served root (a mirror of a host: under
        its path), was overwritten or deleted."""
        path = edge_path(relative)
        directory = _directory(path)
        with self._lock:
            if directory in self._wild:
                return
            listed = self._listed.setdefault(directory, set())
            listed.add(path)
            if len(listed) > self.wildcard_after:
                del self._listed[directory]
                self._wild.add(directory)

    def take(self) -> list[str]:
        """The batch, within CloudFront's limits, and start the next one empty."""
        with self._lock:
            paths = {directory + "*" for directory in self._wild}
            paths.update(path for listed in self._listed.values() for path in listed)
            self._listed, self._wild = {}, set()
        return coarsened(_subsumed(paths), self.floor)


class CloudFront:
    """Sends a run's batches to one distribution and waits for them: ``wait`` seconds in all, for
    room while too many invalidations are in progress and for the batches to complete."""

    def __init__(
        self,
        client: Callable[[], Any],
        distribution: str,
        run_id: str,
        wait: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``client``: builds the CloudFront client, called once, when the first batch goes out."""
        self._make_client = client
        self._client: Any = None
        self.distribution = distribution
        self.run_id = run_id
        self.wait_left = wait
        self._sleep = sleep
        self._clock = clock

    def _pause(self, seconds: float) -> bool:
        """Sleep out of the run's waiting budget; False when it is spent."""
        seconds = min(seconds, self.wait_left)
        if seconds <= 0:
            return False
        self._sleep(seconds)
        self.wait_left -= seconds
        return True

    def invalidate(self, batch: EdgeBatch) -> None:
        """Send ``batch`` and wait for it within the budget; its status, id and times say how it went."""
        self._send(batch)
        self._await(batch)
        if batch.lost:
            log.warning(
                "CloudFront did not take %d invalidation paths: the next run that replaces them, or their TTL, "
                "clears the stale copies",
                len(batch.paths),
                extra={"phase": batch.phase, "status": batch.status.value, "error": batch.error},
            )
        elif batch.status is EdgeStatus.IN_PROGRESS:
            log.info(
                "invalidation not complete within --invalidation-wait; CloudFront finishes it on its own",
                extra={"phase": batch.phase, "invalidation_id": batch.id},
            )

    def _send(self, batch: EdgeBatch) -> None:
        backoff = FIRST_BACKOFF
        while True:
            try:
                if self._client is None:
                    self._client = self._make_client()
                response = self._client.create_invalidation(
                    DistributionId=self.distribution,
                    InvalidationBatch={
                        "Paths": {"Quantity": len(batch.paths), "Items": batch.paths},
                        # Unique per batch; a retry of a request whose answer was lost gets the same
                        # invalidation back instead of a second one.
                        "CallerReference": f"mirrorkeeper-{self.run_id}-{batch.phase}",
                    },
                )
            except ClientError as exc:
                throttled = classify(exc) is S3Failure.THROTTLED
                if throttled and self._pause(backoff):
                    backoff = min(2 * backoff, MAX_BACKOFF)
                    continue
                batch.status = EdgeStatus.THROTTLED if throttled else EdgeStatus.FAILED
                batch.error = f"{error_code(exc)}: {exc}"
                return
            except (BotoCoreError, StorageError) as exc:
                batch.status, batch.error = EdgeStatus.FAILED, str(exc)
                return
            self._note(batch, response["Invalidation"])
            return

    def _await(self, batch: EdgeBatch) -> None:
        interval = FIRST_POLL
        while batch.status is EdgeStatus.IN_PROGRESS and self._pause(interval):
            interval = min(2 * interval, MAX_POLL)
            try:
                response = self._client.get_invalidation(DistributionId=self.distribution, Id=batch.id)
            except (ClientError, BotoCoreError, StorageError) as exc:
                log.info("could not ask CloudFront how the invalidation is going", extra={"error": str(exc)})
                continue
            self._note(batch, response["Invalidation"])

    def _note(self, batch: EdgeBatch, invalidation: dict[str, Any]) -> None:
        batch.id = str(invalidation["Id"])
        batch.created = invalidation["CreateTime"].timestamp()
        if str(invalidation["Status"]).lower() == "completed":
            batch.status, batch.completed = EdgeStatus.COMPLETED, self._clock()
        else:
            batch.status = EdgeStatus.IN_PROGRESS
