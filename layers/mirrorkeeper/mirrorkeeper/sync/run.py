"""One sync run: the container task's job.

::

    lock ─▶ list upstream ─▶ plan (diff vs manifest, deletion guard) ─▶ for each batch:
    fetch (rsync --files-from → staging) ║ upload previous batch ─▶ invalidate replaced data
    ─▶ late files, tier by tier ─▶ symlinks ─▶ directory index pages ─▶ deletions
    ─▶ invalidate the rest ─▶ manifest ─▶ trace ─▶ report ─▶ unlock

Publishing order is what keeps the mirror usable at every instant: data before the index files
that name it (and the caches rid of the data it replaced before then: sync/edge.py), deletions
only after everything new is in place, the manifest after the tree it describes, the trace file
last. A run killed anywhere leaves a tree clients can use, and the next run's plan (made against
the last *published* manifest) redoes whatever did not finish, its invalidations included.

No single path can stop the mirror: one that upstream will not send or S3 will not take is
skipped for this run (its published copy stays), an index file naming it is held back, and
everything else is published (exit 5, "partial"); the deletion guard holds deletions, never the
additions and fixes that come with them (exit 4). A file larger than the staging budget is
streamed from rsync into a multipart upload (sync/stream.py).
"""

import hashlib
import heapq
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from stat import S_ISREG
from typing import IO, cast
from urllib.parse import quote

from mirrorkeeper.aws import RequestCounter, S3Client, check_bucket, service_client
from mirrorkeeper.config import SyncConfig
from mirrorkeeper.content import (
    INDEX_CACHE_CONTROL,
    INDEX_CONTENT_TYPE,
    content_type,
    render_index,
    render_redirect,
    render_trace,
)
from mirrorkeeper.display import iso
from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.errors import DeletionGuardError, ExitCode, MirrorkeeperError, StorageError, StoreUnreachableError
from mirrorkeeper.layout import RESERVED_DIR
from mirrorkeeper.logs import Progress
from mirrorkeeper.manifest import ManifestHeader
from mirrorkeeper.names import printable
from mirrorkeeper.state import (
    FRESH_CACHE_CONTROL,
    MTIME_META,
    SYMLINK_META,
    EdgeBatch,
    EdgeRecord,
    ManifestMeta,
    RepairList,
    RunReport,
    StateStore,
    SyncResult,
    new_run_id,
)
from mirrorkeeper.sync.edge import CloudFront, EdgePaths
from mirrorkeeper.sync.failures import RunFailures
from mirrorkeeper.sync.indexes import holding_scope, named_files, names_failed
from mirrorkeeper.sync.lease import Lease
from mirrorkeeper.sync.planner import Change, GuardLimits, Plan, check_guard, make_plan
from mirrorkeeper.sync.rsync import ListingRun, RsyncClient
from mirrorkeeper.sync.store import MirrorStore
from mirrorkeeper.sync.stream import NotStreamed, stream_file
from mirrorkeeper.sync.tree import LinkKind, UpstreamTree, build_tree

log = logging.getLogger(__name__)

REPORT_SKIPPED_LIMIT = 200
# Files per fetch batch. Without a cap, a tree of small files is one batch under any byte budget,
# and nothing uploads until rsync has fetched all of it. 1000 files is one rsync session (a
# fraction of a second) ahead of a few seconds of uploads, however small the files.
BATCH_FILES = 1000
# Tasks queued per upload thread: enough that no thread waits for work, few enough that the queue
# (a Future per task) stays small however many files a run uploads.
QUEUED_PER_WORKER = 4
_LISTING_KEY_VERSION = b"mirrorkeeper listing key v1"


def make_batches(changes: Sequence[Change], batch_bytes: int, batch_files: int = BATCH_FILES) -> list[list[Change]]:
    """Group changes so each batch's files fit in ``batch_bytes`` (a larger file gets a batch alone) and
    no batch holds more than ``batch_files`` files."""
    batches: list[list[Change]] = []
    current: list[Change] = []
    size = 0
    for change in changes:
        if current and (size + change.new.size > batch_bytes or len(current) >= batch_files):
            batches.append(current)
            current, size = [], 0
        current.append(change)
        size += change.new.size
    if current:
        batches.append(current)
    return batches


class SyncRun:
    batch_files = BATCH_FILES

    def __init__(
        self,
        config: SyncConfig,
        client: S3Client,
        counter: RequestCounter,
        rsync: RsyncClient | None = None,
        interactive: bool = False,
        out: IO[str] | None = None,
        clock: Callable[[], float] = time.time,
        listing: ListingRun | None = None,
        cloudfront: CloudFront | None = None,
    ) -> None:
        """``listing``: the upstream listing, already started by the caller (who closes it) so that it
        runs while the caller starts up; without it, the run starts its own. ``cloudfront``: where
        invalidations go; by default the distribution the settings name, if any."""
        self.config = config
        self.layout = config.layout
        self.client = client
        self.counter = counter
        self.store = MirrorStore(client, config.layout, config.multipart_threshold)
        self.state = StateStore(client, config.layout)
        self.rsync = rsync or RsyncClient.for_sync(config)
        self.interactive = interactive
        self.out = out or sys.stdout
        self.clock = clock
        self.report = RunReport(run_id=new_run_id(clock()), upstream=config.upstream, started=clock())
        self.lease: Lease | None = None
        self._listing = listing
        # Upload threads update the report's counters.
        self._report_lock = threading.Lock()
        # False once the manifest this run publishes differs from what upstream listed (a file
        # vanished or changed during the run, a link could not be published): the next run must
        # then compare, so the listing key is not recorded.
        self._as_listed = True
        self._digests = Digests(0)
        self.failures: RunFailures | None = None  # from the plan on
        self._guard_reasons: list[str] = []
        # What this run replaced in the served tree since its last batch of invalidations.
        self._replaced_keys = EdgePaths(floor=len(self.layout.path.split("/")) if self.layout.path else 0)
        self._edge_record: EdgeRecord | None = None
        self._damaged: set[str] = set()
        if cloudfront is None and config.cloudfront_distribution_id:
            cloudfront = CloudFront(
                lambda: service_client("cloudfront", config.aws),
                config.cloudfront_distribution_id,
                self.report.run_id,
                config.invalidation_wait,
            )
        self.cloudfront = cloudfront

    # -- entry point ----------------------------------------------------------------------------

    def run(self) -> RunReport:
        try:
            with ExitStack() as stack:
                if self._listing is None:
                    # Started first: rsync lists while we check the bucket and take the lock.
                    self._listing = stack.enter_context(self.rsync.start_list(self.config.upstream))
                if self.config.dry_run:
                    check_bucket(self.client, self.layout.bucket)
                    return self._dry_run()
                self.lease = Lease(self.state, self.config.lock_ttl, self.clock)
                with self.lease:
                    self._sync()
        except MirrorkeeperError as exc:
            self._finish(
                SyncResult.REFUSED
                if isinstance(exc, DeletionGuardError)
                else (SyncResult.LOCKED if exc.exit_code is ExitCode.LOCKED else SyncResult.FAILED),
                int(exc.exit_code),
                str(exc),
                # A store we cannot reach will not take the report either: say so now, not after more waiting.
                store_reachable=not isinstance(exc, StoreUnreachableError),
            )
            raise
        except KeyboardInterrupt:
            # Ctrl-C, or SIGTERM (ECS stopping the task; the CLI turns it into KeyboardInterrupt).
            self._finish(
                SyncResult.FAILED,
                int(ExitCode.INTERRUPTED),
                "stopped by a signal before it finished; the served mirror is consistent, the next run completes it",
            )
            raise
        except BaseException as exc:
            self._finish(SyncResult.FAILED, 1, f"unexpected {type(exc).__name__}: {exc}")
            raise
        return self.report

    def _phase(self, name: str) -> None:
        self.report.phase = name
        log.info("phase %s", name, extra={"phase": name, "run_id": self.report.run_id})
        if self.lease is not None:
            self.lease.check()

    # -- planning -------------------------------------------------------------------------------

    def _listing_run(self) -> ListingRun:
        assert self._listing is not None, "run() starts the listing before anything needs it"
        return self._listing

    def _listing_key(self) -> str | None:
        """What the plan depends on besides the published manifest: the raw listing and the settings
        that decide which listed names are mirrored. None when the listing is not a clean one."""
        digest = self._listing_run().digest
        if digest is None:
            return None
        key = hashlib.sha256(_LISTING_KEY_VERSION)
        config = self.config
        filters = "\0".join([*config.include, "\1", *config.exclude])
        for part in (config.upstream, self.layout.served_prefix, config.trace_path, RESERVED_DIR, filters, digest):
            key.update(b"\0" + part.encode())
        return key.hexdigest()

    def _build_tree(self) -> UpstreamTree:
        tree = build_tree(self._listing_run().listing(), self.layout, (RESERVED_DIR, self.config.trace_path))
        for skipped in tree.skipped[:REPORT_SKIPPED_LIMIT]:
            log.warning("not mirrored: %s", skipped.reason, extra={"path": printable(skipped.path)})
        self.report.skipped = [{"path": s.path, "reason": s.reason} for s in tree.skipped[:REPORT_SKIPPED_LIMIT]]
        self.report.skipped_total = len(tree.skipped)
        return tree

    def _plan(self, tree: UpstreamTree, repair: RepairList | None = None) -> Plan:
        self._phase("plan")
        # Published paths whose objects are missing or damaged are planned as never published:
        # fetched and uploaded again, like any new file.
        damaged = self._damaged = set(repair.reupload) if repair else set()
        with self.state.manifest_entries() as published:
            trusted = (entry for entry in published if entry.path not in damaged) if damaged else published
            plan = make_plan(tree, trusted, self.config.late_patterns)
        self.report.plan = plan.counts()
        log.info("plan made", extra={"upstream_entries": len(tree.entries), **self.report.plan})
        return plan

    @property
    def _limits(self) -> GuardLimits:
        config = self.config
        return GuardLimits(config.max_delete_percent, config.max_delete, config.min_delete_guard)

    def _dry_run(self) -> RunReport:
        self._phase("list")
        tree = self._build_tree()
        plan = self._plan(tree)
        reasons = check_guard(plan, tree, self._limits)
        self._print_plan(plan)
        if reasons and not self.config.force_delete:
            self._finish(
                SyncResult.REFUSED,
                4,
                f"a real run would hold its {len(plan.deletes)} deletions (and publish the rest): "
                + "; ".join(reasons),
            )
            raise DeletionGuardError(self.report.error + ". Rerun with --force-delete if upstream really shrank.")
        self._finish(SyncResult.DRY_RUN, 0, "")
        return self.report

    def _print_plan(self, plan: Plan) -> None:
        write = self.out.write
        for change in plan.data:
            write(f"upload  {printable(change.new.path)}\n")
        for number, tier in enumerate(plan.late_tiers, 1):
            for change in tier:
                write(f"late{number}   {printable(change.new.path)}\n")
        for link in plan.link_entries():
            write(f"link    {printable(link.path)} -> {printable(link.target or '')}\n")
        for directory in sorted(plan.dirty_dirs):
            write(f"index   {printable(directory)}/\n")
        for entry in [*plan.deletes, *plan.replaced]:
            write(f"delete  {printable(entry.path)}{'/' if entry.type is EntryType.DIR else ''}\n")
        counts = ", ".join(f"{k}={v}" for k, v in plan.counts().items())
        write(f"plan: {counts}\n")

    # -- the run --------------------------------------------------------------------------------

    def _sync(self) -> None:
        self._phase("list")
        # Asked while rsync may still be listing: one HEAD, whatever the size of the tree.
        published = self.state.manifest_meta()
        key = self._listing_key()
        if published is not None and key is not None and published.listing_key == key and self._unchanged(published):
            return
        tree = self._build_tree()
        repair = self.state.repair_list() if published is not None and published.repair else None
        plan = self._plan(tree, repair)
        failures = self.failures = RunFailures(self.state.read_failures(), self.clock(), self.config.quarantine_after)
        self._leave_quarantined(plan)
        for path, reason in sorted(tree.unreadable.items()):
            failures.add(path, reason)
        self._guard(plan, tree)
        strays = self._strays(plan, repair)
        if not (plan.is_empty and repair is None):
            self._publish(plan, tree, strays)
        if repair is not None:
            self.state.delete_repair_list()  # done: the manifest now matches S3 again
            self.report.repaired = len(repair.reupload) + len(strays)
        self._settle(plan, tree)
        self.report.held_deletions = len(plan.held)
        self.report.held_deletion_examples = [e.path for e in plan.held[:REPORT_SKIPPED_LIMIT]]
        count, size = _totals(plan.published())
        if plan.is_empty and repair is None and not self._guard_reasons and not failures.partial:
            self._publish_trace(count, size)
            self._finish(SyncResult.NO_CHANGE, 0, "")
            return
        self._publish_trace(count, size)
        self._finish(*self._outcome())

    def _publish(self, plan: Plan, tree: UpstreamTree, strays: list[str]) -> None:
        """Everything after the plan, in the publishing order (module docstring)."""
        header = ManifestHeader(iso(self.clock()), self.config.upstream, len(tree.entries))
        self.state.put_manifest(self.state.listing_key, header, tree.entries)
        self._digests = Digests(len(plan.target))
        staging_root = self._staging_root()
        try:
            with ThreadPoolExecutor(self.config.upload_concurrency, thread_name_prefix="upload") as pool:
                self._phase("data")
                self._transfer(plan, plan.data, staging_root, pool, "data")
                self._invalidate("data")
                for number, tier in enumerate(plan.late_tiers, 1):
                    self._phase(f"late-{number}")
                    self._transfer(plan, tier, staging_root, pool, f"late-{number}", indexes=True)
                self._phase("links")
                self._publish_links(plan, tree, pool)
                self._hold_deletions_named_by_held_indexes(plan)
                self._phase("index")
                self._publish_indexes(plan, pool)
        finally:
            shutil.rmtree(staging_root, ignore_errors=True)
        self._phase("delete")
        doomed = [
            *(
                self.layout.directory_key(e.path) if e.type is EntryType.DIR else self.layout.served_key(e.path)
                for e in [*plan.deletes, *plan.replaced]
            ),
            *strays,
        ]
        self.report.deleted_objects = self.store.delete_keys(doomed)
        for key in doomed:
            self._replaced(key)
        self._invalidate("final")
        self._phase("manifest")
        count, size = _totals(plan.published())
        listing_key = self._listing_key()
        clean = tree.complete and not tree.unreadable and self._as_listed and not plan.held
        meta = ManifestMeta(
            listing_key if clean and listing_key else "", count, size, len(tree.skipped), self.report.run_id
        )
        self.state.put_manifest(
            self.state.manifest_key,
            ManifestHeader(iso(self.clock()), self.config.upstream, count),
            self._published(plan),
            meta,
        )

    def _replaced(self, key: str) -> None:
        """``key``, a served object, was overwritten or deleted: a cache may still hold its old copy."""
        # CloudFront's paths start at the host's root: a mirror of a host's begin with its path.
        self._replaced_keys.add(key.removeprefix(self.layout.host.served_prefix))

    def _invalidate(self, phase: str) -> None:
        """Tell the edge to forget what this run replaced since the last batch: CloudFront, when a
        distribution is configured, and our own front ends through the record (state.EdgeRecord). A
        failure here is reported, never raised: the objects are published either way."""
        paths = self._replaced_keys.take()
        if not paths:
            return
        self._phase(f"invalidate-{phase}")
        batch = EdgeBatch(phase, paths)
        if self.cloudfront is not None:
            self.cloudfront.invalidate(batch)
        try:
            record = self._edge_record
            if record is None:
                previous = self.state.edge_record()
                record = self._edge_record = EdgeRecord(
                    self.report.run_id,
                    previous.run_id if previous else "",
                    self.config.cloudfront_distribution_id,
                    root=self.layout.path,
                )
            record.batches.append(batch)
            self.report.invalidation = record.summary()
            self.state.write_edge_record(record)
        except StorageError as exc:
            log.warning(
                "could not record the invalidated paths; serve-http keeps its copies up to --cache-ttl",
                extra={"error": str(exc)},
            )

    def _staging_root(self) -> Path:
        """A fresh staging directory for this run. Those of this mirror's earlier runs go first: we
        hold the lease, so none of those runs is alive (one killed with SIGKILL leaves its files)."""
        base = Path(self.config.staging_dir or tempfile.gettempdir())
        # The same bucket name on two endpoints (two local test servers) is two mirrors, and so are two
        # paths of a host's bucket: a run of one must never take the other's live files for a dead run's.
        where = f"{self.config.aws.endpoint_url or ''} {self.layout.bucket}/{self.layout.prefix} {self.layout.path}"
        mirror = hashlib.sha256(where.encode()).hexdigest()[:10]
        prefix = f"mirrorkeeper-{mirror}-"
        for stale in base.glob(prefix + "*"):
            log.info("removing the staging directory of a run that died", extra={"path": str(stale)})
            shutil.rmtree(stale, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=base))

    def _leave_quarantined(self, plan: Plan) -> None:
        """Quarantined paths whose daily retry is not due keep their published copy, untouched."""
        failures = self.failures
        assert failures is not None
        if not failures.log.quarantined():
            return

        def keep(change: Change) -> bool:
            if failures.skip_quarantined(change.new.path):
                plan.target[change.index] = change.old
                self._as_listed = False
                return False
            return True

        plan.data = [c for c in plan.data if keep(c)]
        plan.late_tiers = [[c for c in tier if keep(c)] for tier in plan.late_tiers]

    def _guard(self, plan: Plan, tree: UpstreamTree) -> None:
        reasons = check_guard(plan, tree, self._limits)
        if not reasons:
            return
        if self.config.force_delete:
            log.warning("deletion guard overridden by --force-delete", extra={"reasons": reasons})
            return
        held = plan.hold(lambda _: True)
        self._guard_reasons = reasons
        self.report.held_because = "; ".join(reasons)
        log.warning("deletion guard: holding %d deletions, publishing the rest", len(held), extra={"reasons": reasons})

    def _hold_deletions_named_by_held_indexes(self, plan: Plan) -> None:
        """An index kept back (held, or not stored) still names the data it named: its tree loses
        nothing this run."""
        failures = self.failures
        assert failures is not None
        kept_back = {
            *failures.held,
            *(c.new.path for tier in plan.late_tiers for c in tier if c.new.path in failures.failed),
        }
        if not kept_back:
            return
        prefixes = tuple(scope + "/" if scope else "" for scope in {holding_scope(path) for path in kept_back})
        held = plan.hold(lambda entry: entry.path.startswith(prefixes))
        if held and not self.report.held_because:
            self.report.held_because = "index files were kept back, so the files they name stay"

    def _settle(self, plan: Plan, tree: UpstreamTree) -> None:
        """The failure log after this run, and the report's account of what was skipped."""
        failures = self.failures
        assert failures is not None
        attempted = {c.new.path for c in plan.uploads} - set(failures.failed)
        upstream = {e.path for e in tree.entries} if failures.log.paths else set()
        gone = [path for path in failures.log.paths if path not in upstream and path not in tree.unreadable]
        newly = failures.settle(attempted, gone)
        if failures.log.paths or failures.stored:
            self.state.write_failures(failures.log)
        failures.report(self.report, newly)

    def _outcome(self) -> tuple[SyncResult, int, str]:
        failures = self.failures
        assert failures is not None
        if self._guard_reasons:
            return (
                SyncResult.DELETIONS_HELD,
                int(ExitCode.DELETION_GUARD),
                f"published, but the deletion guard held {self.report.held_deletions} deletions: "
                + "; ".join(self._guard_reasons)
                + ". Check upstream; if it really shrank, run once with --force-delete (or raise --max-delete-percent "
                "/ --max-delete)",
            )
        if failures.partial:
            return SyncResult.PARTIAL, int(ExitCode.PARTIAL), failures.summary()
        return SyncResult.SUCCESS, 0, ""

    def _strays(self, plan: Plan, repair: RepairList | None) -> list[str]:
        """Served keys the drift check found that nobody published, unless this plan publishes them.
        Not counted by the deletion guard: they were never part of the mirror."""
        if not repair or not repair.delete:
            return []
        planned = {e.path + "/" if e.type is EntryType.DIR else e.path for e in plan.target if e is not None}
        return [self.layout.served_prefix + key for key in repair.delete if key not in planned]

    def _unchanged(self, published: ManifestMeta) -> bool:
        """Finish as a no-change run without parsing the listing or reading the manifest.

        Honest because the plan is a function of the listing, the settings in the listing key and
        the published manifest: that manifest was published (with this key) by a run that listed
        these very bytes and published exactly what they list, so comparing them again would find
        nothing to do. False (compare the long way) when the metadata is not what we write.
        """
        if published.totals is None:
            return False
        entries, size, skipped = published.totals
        self._phase("plan")
        self.report.plan = Plan(target=[]).counts()
        self.report.skipped_total = skipped  # the names are in the report of run `unchanged_since`
        self.report.unchanged_since = published.run_id
        log.info(
            "upstream lists exactly what the published manifest was made from; nothing to plan",
            extra={"unchanged_since": self.report.unchanged_since},
        )
        self._publish_trace(entries, size)
        self._finish(SyncResult.NO_CHANGE, 0, "")
        return True

    def _published(self, plan: Plan) -> Iterator[Entry]:
        """The manifest's entries: the plan's target with the digests of this run's uploads, and the
        held deletions (still published)."""

        def target() -> Iterator[Entry]:
            for index, entry in enumerate(plan.target):
                if entry is not None:
                    digest = self._digests.hex(index)
                    yield entry if digest is None else replace(entry, sha256=digest)

        return heapq.merge(target(), plan.held, key=lambda e: e.path)

    def _transfer(
        self,
        plan: Plan,
        changes: list[Change],
        staging_root: Path,
        pool: ThreadPoolExecutor,
        label: str,
        indexes: bool = False,
    ) -> None:
        if not changes:
            return
        budget = max(self.config.staging_bytes // 2, 1)
        progress = Progress(label, len(changes), sum(c.new.size for c in changes), self.interactive)
        batches = make_batches([c for c in changes if c.new.size <= budget], budget, self.batch_files)
        if batches:
            with ThreadPoolExecutor(1, thread_name_prefix="fetch") as fetcher:

                def fetch(number: int) -> Future[tuple[Path, dict[str, str]]]:
                    dest = staging_root / f"{label}-{number}"
                    return fetcher.submit(self._fetch, batches[number], dest)

                pending = fetch(0)
                for number, batch in enumerate(batches):
                    staged, refused = pending.result()
                    if number + 1 < len(batches):
                        pending = fetch(number + 1)  # overlaps with the upload below
                    try:
                        self._upload_batch(plan, batch, staged, refused, pool, progress, indexes)
                    finally:
                        shutil.rmtree(staged, ignore_errors=True)
                    if self.lease is not None:
                        self.lease.check()
        for change in (c for c in changes if c.new.size > budget):
            self._stream(plan, change, staging_root / f"{label}-stream", budget)
            progress.advance(1, change.new.size)
        progress.finish()

    def _fetch(self, batch: list[Change], dest: Path) -> tuple[Path, dict[str, str]]:
        result = self.rsync.fetch(self.config.upstream, (c.new.path for c in batch), dest)
        return dest, result.failed

    def _stream(self, plan: Plan, change: Change, staging: Path, budget: int) -> None:
        """A file larger than the staging budget: uploaded while rsync fetches it, alone."""
        new = change.new
        try:
            outcome = stream_file(
                self.rsync,
                self.config.upstream,
                new.path,
                new.size,
                staging,
                self.store,
                self.layout.served_key(new.path),
                content_type(new.name),
                {MTIME_META: str(new.mtime)},
                backlog=budget,
            )
        except StorageError as exc:
            self._not_published(plan, change, str(exc), by_store=True, error=exc)
            return
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(outcome, NotStreamed):
            self._not_published(plan, change, outcome.reason)
            return
        if outcome.mtime != new.mtime:
            # Changed upstream since the listing: the object carries the listed mtime until set right.
            self.store.copy(
                self.layout.served_key(new.path),
                self.layout.served_key(new.path),
                content_type(new.name),
                {MTIME_META: str(outcome.mtime)},
            )
        self._uploaded(plan, change, outcome.digest, outcome.size, outcome.mtime)
        self.report.streamed_files += 1

    def _not_published(
        self, plan: Plan, change: Change, reason: str, by_store: bool = False, error: StorageError | None = None
    ) -> None:
        """``change`` did not land: its published copy (if any) stays, and the run goes on unless the
        store is failing as a whole."""
        assert self.failures is not None
        if error is not None and not error.per_object:
            raise error
        plan.target[change.index] = change.old
        self._as_listed = False
        if not self.failures.add(change.new.path, reason, by_store):
            raise StorageError(
                f"S3 refused {self.failures.store_refusals} objects in this run (last: {reason}); that is the store "
                "failing, not the objects: stopped. What is served stays consistent; check the bucket and the role"
            )

    def _uploaded(self, plan: Plan, change: Change, digest: bytes, size: int, mtime: int) -> None:
        new = change.new
        self._digests.put(change.index, digest)
        if change.overwrites or new.path in self._damaged:
            self._replaced(self.layout.served_key(new.path))
        if size != new.size or mtime != new.mtime:
            # Changed upstream since the listing: record what was uploaded.
            self._as_listed = False
            plan.target[change.index] = replace(new, size=size, mtime=mtime)
        with self._report_lock:
            self.report.uploaded_files += 1
            self.report.uploaded_bytes += size

    def _upload_batch(
        self,
        plan: Plan,
        batch: list[Change],
        staged: Path,
        refused: dict[str, str],
        pool: ThreadPoolExecutor,
        progress: Progress,
        indexes: bool,
    ) -> None:
        assert self.failures is not None
        failures = self.failures
        quarantined = failures.log.quarantined()
        # An index is held back when it names a path that did not land this run; a quarantined one
        # (already alerted) does not hold anything back, or one bad file would freeze its repository.
        blocking = {p for p in failures.blocking() if p not in quarantined} if indexes else set()

        def upload(change: Change) -> None:
            new = change.new
            local = staged / new.path
            try:
                stat = local.lstat()
            except FileNotFoundError:
                stat = None
            if stat is None or not S_ISREG(stat.st_mode):
                # Not sent (unreadable, vanished) or changed type since the listing: retried next run.
                reason = refused.get(new.path, "vanished upstream during the run")
                if reason.startswith("vanished"):
                    with self._report_lock:
                        self.report.vanished.append(new.path)
                self._not_published(plan, change, reason)
                return
            if blocking:
                because = names_failed(named_files(new.path, local), new.path, blocking)
                if because is not None:
                    plan.target[change.index] = change.old
                    self._as_listed = False
                    failures.hold_index(new.path, because)
                    return
            mtime = int(stat.st_mtime)
            try:
                digest = self.store.upload_file(
                    self.layout.served_key(new.path), local, content_type(new.name), {MTIME_META: str(mtime)}
                )
            except StorageError as exc:
                self._not_published(plan, change, f"S3 would not store it: {exc}", by_store=True, error=exc)
                return
            self._uploaded(plan, change, digest, stat.st_size, mtime)
            progress.advance(1, stat.st_size)

        run_bounded(pool, upload, batch, self._queue_limit)

    @property
    def _queue_limit(self) -> int:
        return QUEUED_PER_WORKER * self.config.upload_concurrency

    def _publish_links(self, plan: Plan, tree: UpstreamTree, pool: ThreadPoolExecutor) -> None:
        wanted = {tree.links[link.path].final_path for link in plan.link_entries()}
        finals = {e.path: i for i, e in enumerate(plan.target) if e is not None and e.path in wanted}

        def publish(index: int) -> None:
            link = plan.target[index]
            assert link is not None, "links are only dropped by this phase"
            resolved = tree.links[link.path]
            metadata = {SYMLINK_META: _ascii_meta(link.target or "")}
            if resolved.kind is LinkKind.DIR:
                metadata[MTIME_META] = str(link.mtime)
                self.store.put_bytes(
                    self.layout.served_key(link.path),
                    render_redirect(link.path, resolved.final_path),
                    INDEX_CONTENT_TYPE,
                    metadata,
                    INDEX_CACHE_CONTROL,
                )
            else:
                final_index = finals.get(resolved.final_path, -1)
                final = plan.target[final_index] if final_index >= 0 else None
                if final is None or final.type is not EntryType.FILE:
                    plan.target[index] = None
                    self._as_listed = False
                    log.warning("symlink target not published; skipped", extra={"path": printable(link.path)})
                    return
                metadata[MTIME_META] = str(final.mtime)
                self.store.copy(
                    self.layout.served_key(final.path),
                    self.layout.served_key(link.path),
                    content_type(final.name),
                    metadata,
                )
                plan.target[index] = replace(link, sha256=self._digests.hex(final_index) or final.sha256)
            if link.path not in plan.new_objects:
                self._replaced(self.layout.served_key(link.path))
            with self._report_lock:
                self.report.links += 1

        run_bounded(pool, publish, plan.links, self._queue_limit)

    def _publish_indexes(self, plan: Plan, pool: ThreadPoolExecutor) -> None:
        children: dict[str, list[Entry]] = {d: [] for d in plan.dirty_dirs}
        mtimes: dict[str, int] = {}
        for entry in plan.published():
            if entry.parent in children:
                children[entry.parent].append(entry)
            if entry.path in children:
                mtimes[entry.path] = entry.mtime

        def publish(directory: str) -> None:
            page = render_index(directory, children[directory], self.config.mirror_name)
            self.store.put_bytes(
                self.layout.directory_key(directory),
                page,
                INDEX_CONTENT_TYPE,
                {MTIME_META: str(mtimes.get(directory, int(self.clock())))},
                INDEX_CACHE_CONTROL,
            )
            if directory not in plan.new_objects:
                self._replaced(self.layout.directory_key(directory))
            with self._report_lock:
                self.report.index_pages += 1

        run_bounded(pool, publish, sorted(plan.dirty_dirs), self._queue_limit)

    def _publish_trace(self, count: int, size: int) -> None:
        self._phase("trace")
        self.report.mirror_entries, self.report.mirror_bytes = count, size
        body = render_trace(
            self.config.mirror_name, self.config.upstream, self.clock(), self.report.run_id, count, size
        )
        self.store.put_bytes(
            self.layout.served_key(self.config.trace_path),
            body,
            "text/plain; charset=utf-8",
            {MTIME_META: str(int(self.clock()))},
            FRESH_CACHE_CONTROL,
        )

    def _finish(self, result: SyncResult, exit_code: int, error: str, store_reachable: bool = True) -> None:
        report = self.report
        report.result, report.exit_code, report.error = result, exit_code, error
        report.finished = self.clock()
        if self.config.dry_run or result is SyncResult.LOCKED or not store_reachable:
            report.s3_requests = self.counter.total
            return  # touches nothing; a locked run must not overwrite the holder's report
        # The report counts the requests still to come: its own two writes below and, when we still
        # hold the lease, its release alongside them (retries of those three are not counted).
        pending = 2
        if self.lease is not None:
            self.lease.stop_renewing()  # so no renewal slips in between this count and the release
            pending += 1 if self.lease.will_release else 0
            report.lease_renewals = self.lease.renewals
        report.s3_requests = self.counter.total + pending
        report.s3_requests_by_operation = dict(self.counter.by_operation)
        # The two copies of the report and the lease's release all at once: a run with nothing to do
        # is short enough for each round trip to show, and everything the lease protects is published.
        self.state.write_run_report(report, alongside=self.lease.release if self.lease is not None else None)


class Digests:
    """SHA-256 digests of uploaded files by plan index, 33 bytes each. Kept as hex strings on copies
    of their entries, they cost six times that: a fifth of a first sync's memory for small files.
    The manifest writer makes the hex strings one at a time."""

    def __init__(self, size: int) -> None:
        self._raw = bytearray(32 * size)
        self._present = bytearray(size)

    def put(self, index: int, digest: bytes) -> None:
        self._raw[32 * index : 32 * index + 32] = digest
        self._present[index] = 1

    def hex(self, index: int) -> str | None:
        return self._raw[32 * index : 32 * index + 32].hex() if self._present[index] else None


def _totals(entries: Iterable[Entry | None]) -> tuple[int, int]:
    """Entries in the mirror, and the bytes of its files."""
    count, size = 0, 0
    for entry in entries:
        if entry is not None:
            count += 1
            size += entry.size if entry.type is EntryType.FILE else 0
    return count, size


_DONE = object()


def run_bounded[T](pool: ThreadPoolExecutor, work: Callable[[T], None], items: Iterable[T], limit: int) -> None:
    """Run ``work`` over ``items`` in ``pool`` with at most ``limit`` of them queued or running at once:
    a Future for every item up front costs memory in proportion to the tree. On the first failure
    submit no more, cancel what has not started, wait for what has, and raise that failure."""
    slots = threading.Semaphore(limit)
    guard = threading.Lock()
    pending: set[Future[None]] = set()
    errors: list[BaseException] = []

    def finished(future: Future[None]) -> None:
        doomed: list[Future[None]] = []
        with guard:
            pending.discard(future)
            error = None if future.cancelled() else future.exception()
            if error is not None:
                errors.append(error)
                doomed = list(pending)
        slots.release()
        for other in doomed:  # outside the lock: a cancelled future runs this callback at once
            other.cancel()

    iterator = iter(items)
    try:
        while True:
            slots.acquire()  # before taking the next item, so items are not drawn faster than they run
            item = next(iterator, _DONE)
            if item is _DONE or errors:
                slots.release()
                break
            future = pool.submit(work, cast(T, item))
            with guard:
                pending.add(future)
            future.add_done_callback(finished)
    except BaseException:
        with guard:
            doomed = list(pending)
        for other in doomed:
            other.cancel()
        raise
    finally:
        for _ in range(limit):  # every slot back: nothing of ours is queued or running
            slots.acquire()
    if errors:
        raise errors[0]


def _ascii_meta(text: str) -> str:
    """S3 user metadata must be ASCII: percent-encode anything else (front ends decode it)."""
    return quote(text, safe="/ -._~+!$&'()*,;=:@")
