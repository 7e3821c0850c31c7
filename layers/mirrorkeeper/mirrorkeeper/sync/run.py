"""One sync run: the container task's job.

::

    lock ─▶ list upstream ─▶ plan (diff vs manifest, deletion guard) ─▶ for each batch:
    fetch (rsync --files-from → staging) ║ upload previous batch ─▶ late files, tier by tier
    ─▶ symlinks ─▶ directory index pages ─▶ deletions ─▶ manifest ─▶ trace ─▶ report ─▶ unlock

Publishing order is what keeps the mirror usable at every instant: data before the index files
that name it, deletions only after everything new is in place, the manifest after the tree it
describes, the trace file last. A run killed anywhere leaves a tree clients can use, and the
next run's plan (made against the last *published* manifest) redoes whatever did not finish.
"""

import hashlib
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

from mirrorkeeper.aws import RequestCounter, S3Client, check_bucket
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
from mirrorkeeper.errors import DeletionGuardError, ExitCode, MirrorkeeperError
from mirrorkeeper.layout import RESERVED_DIR
from mirrorkeeper.logs import Progress
from mirrorkeeper.manifest import ManifestHeader
from mirrorkeeper.names import printable
from mirrorkeeper.state import (
    FRESH_CACHE_CONTROL,
    MTIME_META,
    SYMLINK_META,
    ManifestMeta,
    RepairList,
    RunReport,
    StateStore,
    SyncResult,
    new_run_id,
)
from mirrorkeeper.sync.lease import Lease
from mirrorkeeper.sync.planner import Change, Plan, check_guard, make_plan
from mirrorkeeper.sync.rsync import ListingRun, RsyncClient
from mirrorkeeper.sync.store import MirrorStore
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
    ) -> None:
        """``listing``: the upstream listing, already started by the caller (who closes it) so that it
        runs while the caller starts up; without it, the run starts its own."""
        self.config = config
        self.layout = config.layout
        self.client = client
        self.counter = counter
        self.store = MirrorStore(client, config.layout, config.multipart_threshold)
        self.state = StateStore(client, config.layout)
        self.rsync = rsync or RsyncClient(config.rsync_command, config.rsync_timeout)
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
        for part in (self.config.upstream, self.layout.served_prefix, self.config.trace_path, RESERVED_DIR, digest):
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
        damaged = set(repair.reupload) if repair else set()
        with self.state.manifest_entries() as published:
            trusted = (entry for entry in published if entry.path not in damaged) if damaged else published
            plan = make_plan(tree, trusted, self.config.late_patterns)
        self.report.plan = plan.counts()
        log.info("plan made", extra={"upstream_entries": len(tree.entries), **self.report.plan})
        return plan

    def _dry_run(self) -> RunReport:
        self._phase("list")
        tree = self._build_tree()
        plan = self._plan(tree)
        reasons = check_guard(plan, tree, self.config.max_delete_percent, force=True)
        self._print_plan(plan)
        if reasons and not self.config.force_delete:
            self._finish(
                SyncResult.REFUSED, 4, "a real run would be refused by the deletion guard: " + "; ".join(reasons)
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
        for entry in plan.deletes:
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
        check_guard(plan, tree, self.config.max_delete_percent, self.config.force_delete)
        strays = self._strays(plan, repair)
        if plan.is_empty and repair is None:
            self._publish_trace(*_totals(plan.target))
            self._finish(SyncResult.NO_CHANGE, 0, "")
            return
        header = ManifestHeader(iso(self.clock()), self.config.upstream, len(tree.entries))
        self.state.put_manifest(self.state.listing_key, header, tree.entries)
        self._digests = Digests(len(plan.target))
        staging_root = Path(tempfile.mkdtemp(prefix="mirrorkeeper-", dir=self.config.staging_dir))
        try:
            with ThreadPoolExecutor(self.config.upload_concurrency, thread_name_prefix="upload") as pool:
                self._phase("data")
                self._transfer(plan, plan.data, staging_root, pool, "data")
                for number, tier in enumerate(plan.late_tiers, 1):
                    self._phase(f"late-{number}")
                    self._transfer(plan, tier, staging_root, pool, f"late-{number}")
                self._phase("links")
                self._publish_links(plan, tree, pool)
                self._phase("index")
                self._publish_indexes(plan, pool)
        finally:
            shutil.rmtree(staging_root, ignore_errors=True)
        self._phase("delete")
        self.report.deleted_objects = self.store.delete_keys(
            [
                *(
                    self.layout.directory_key(e.path) if e.type is EntryType.DIR else self.layout.served_key(e.path)
                    for e in plan.deletes
                ),
                *strays,
            ]
        )
        self._phase("manifest")
        count, size = _totals(plan.target)
        meta = None
        if key is not None and tree.complete and self._as_listed:
            meta = ManifestMeta(key, count, size, len(tree.skipped), self.report.run_id)
        self.state.put_manifest(
            self.state.manifest_key,
            ManifestHeader(iso(self.clock()), self.config.upstream, count),
            self._published(plan),
            meta,
        )
        if repair is not None:
            self.state.delete_repair_list()  # done: the manifest now matches S3 again
            self.report.repaired = len(repair.reupload) + len(strays)
        self._publish_trace(count, size)
        self._finish(SyncResult.SUCCESS, 0, "")

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
        """The manifest's entries: the plan's target, with the digests of this run's uploads."""
        for index, entry in enumerate(plan.target):
            if entry is not None:
                digest = self._digests.hex(index)
                yield entry if digest is None else replace(entry, sha256=digest)

    def _transfer(
        self, plan: Plan, changes: list[Change], staging_root: Path, pool: ThreadPoolExecutor, label: str
    ) -> None:
        if not changes:
            return
        batches = make_batches(changes, max(self.config.staging_bytes // 2, 1), self.batch_files)
        progress = Progress(label, len(changes), sum(c.new.size for c in changes), self.interactive)
        with ThreadPoolExecutor(1, thread_name_prefix="fetch") as fetcher:

            def fetch(number: int) -> Future[Path]:
                dest = staging_root / f"{label}-{number}"
                return fetcher.submit(self._fetch, batches[number], dest)

            pending = fetch(0)
            for number, batch in enumerate(batches):
                staged = pending.result()
                if number + 1 < len(batches):
                    pending = fetch(number + 1)  # overlaps with the upload below
                try:
                    self._upload_batch(plan, batch, staged, pool, progress)
                finally:
                    shutil.rmtree(staged, ignore_errors=True)
                if self.lease is not None:
                    self.lease.check()
        progress.finish()

    def _fetch(self, batch: list[Change], dest: Path) -> Path:
        self.rsync.fetch(self.config.upstream, (c.new.path for c in batch), dest)
        return dest

    def _upload_batch(
        self, plan: Plan, batch: list[Change], staged: Path, pool: ThreadPoolExecutor, progress: Progress
    ) -> None:
        def upload(change: Change) -> None:
            new = change.new
            local = staged / new.path
            try:
                stat = local.lstat()
            except FileNotFoundError:
                stat = None
            if stat is None or not S_ISREG(stat.st_mode):
                # Vanished or changed type since the listing: keep what is published, retry next run.
                plan.target[change.index] = change.old
                self._as_listed = False
                with self._report_lock:
                    self.report.vanished.append(new.path)
                log.warning(
                    "vanished upstream during the run; kept the published copy", extra={"path": printable(new.path)}
                )
                return
            mtime = int(stat.st_mtime)
            digest = self.store.upload_file(
                self.layout.served_key(new.path), local, content_type(new.name), {MTIME_META: str(mtime)}
            )
            self._digests.put(change.index, digest)
            if stat.st_size != new.size or mtime != new.mtime:
                # Changed upstream since the listing: record what was uploaded.
                self._as_listed = False
                plan.target[change.index] = replace(new, size=stat.st_size, mtime=mtime)
            with self._report_lock:
                self.report.uploaded_files += 1
                self.report.uploaded_bytes += stat.st_size
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
            with self._report_lock:
                self.report.links += 1

        run_bounded(pool, publish, plan.links, self._queue_limit)

    def _publish_indexes(self, plan: Plan, pool: ThreadPoolExecutor) -> None:
        children: dict[str, list[Entry]] = {d: [] for d in plan.dirty_dirs}
        mtimes: dict[str, int] = {}
        for entry in plan.target:
            if entry is None:
                continue
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

    def _finish(self, result: SyncResult, exit_code: int, error: str) -> None:
        report = self.report
        report.result, report.exit_code, report.error = result, exit_code, error
        report.finished = self.clock()
        if self.config.dry_run or result is SyncResult.LOCKED:
            report.s3_requests = self.counter.total
            return  # touches nothing; a locked run must not overwrite the holder's report
        # The report counts the requests still to come: its own two writes below and, when we still
        # hold the lease, its release alongside them (retries of those three are not counted).
        pending = 2
        if self.lease is not None:
            self.lease.stop_renewing()  # so no renewal slips in between this count and the release
            pending += 1 if self.lease.will_release else 0
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
