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

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import IO
from urllib.parse import quote

from mirrorkeeper.aws import RequestCounter, S3Client
from mirrorkeeper.config import SyncConfig
from mirrorkeeper.content import (
    INDEX_CACHE_CONTROL,
    INDEX_CONTENT_TYPE,
    content_type,
    render_index,
    render_redirect,
    render_trace,
)
from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.errors import DeletionGuardError, ExitCode, MirrorkeeperError
from mirrorkeeper.lock import Lease
from mirrorkeeper.logs import Progress
from mirrorkeeper.manifest import ManifestHeader
from mirrorkeeper.names import printable
from mirrorkeeper.planner import Change, Plan, check_guard, make_plan
from mirrorkeeper.report import RunReport, SyncResult, new_run_id
from mirrorkeeper.rsync import RsyncClient
from mirrorkeeper.store import MTIME_META, SYMLINK_META, MirrorStore
from mirrorkeeper.tree import LinkKind, UpstreamTree, build_tree

log = logging.getLogger(__name__)

RESERVED_DIR = ".mirrorkeeper/"
TRACE_CACHE_CONTROL = "no-cache, max-age=0"
REPORT_SKIPPED_LIMIT = 200


def make_batches(changes: Sequence[Change], batch_bytes: int) -> list[list[Change]]:
    """Group changes so each batch's files fit in ``batch_bytes`` (a larger file gets a batch alone)."""
    batches: list[list[Change]] = []
    current: list[Change] = []
    size = 0
    for change in changes:
        if current and size + change.new.size > batch_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(change)
        size += change.new.size
    if current:
        batches.append(current)
    return batches


class SyncRun:
    def __init__(
        self,
        config: SyncConfig,
        client: S3Client,
        counter: RequestCounter,
        rsync: RsyncClient | None = None,
        interactive: bool = False,
        out: IO[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.layout = config.layout
        self.client = client
        self.counter = counter
        self.store = MirrorStore(client, config.layout, config.multipart_threshold)
        self.rsync = rsync or RsyncClient(config.rsync_command, config.rsync_timeout)
        self.interactive = interactive
        self.out = out or sys.stdout
        self.clock = clock
        self.report = RunReport(run_id=new_run_id(clock()), upstream=config.upstream, started=clock())
        self.lease: Lease | None = None

    # -- entry point ----------------------------------------------------------------------------

    def run(self) -> RunReport:
        try:
            self.store.check_bucket()
            if self.config.dry_run:
                return self._dry_run()
            self.lease = Lease(self.client, self.layout.bucket, self.layout.lock_key, self.config.lock_ttl, self.clock)
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

    def _list_and_plan(self) -> tuple[UpstreamTree, Plan]:
        self._phase("list")
        listing = self.rsync.list(self.config.upstream)
        tree = build_tree(listing, self.layout, (RESERVED_DIR, self.config.trace_path))
        for skipped in tree.skipped[:REPORT_SKIPPED_LIMIT]:
            log.warning("not mirrored: %s", skipped.reason, extra={"path": printable(skipped.path)})
        self.report.skipped = [{"path": s.path, "reason": s.reason} for s in tree.skipped[:REPORT_SKIPPED_LIMIT]]
        self.report.skipped_total = len(tree.skipped)
        self._phase("plan")
        with self.store.open_manifest() as published:
            plan = make_plan(tree, published, self.config.late_patterns)
        self.report.plan = plan.counts()
        log.info("plan made", extra={"upstream_entries": len(tree.entries), **self.report.plan})
        return tree, plan

    def _dry_run(self) -> RunReport:
        tree, plan = self._list_and_plan()
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
        tree, plan = self._list_and_plan()
        check_guard(plan, tree, self.config.max_delete_percent, self.config.force_delete)
        if plan.is_empty:
            self._publish_trace(plan.target)
            self._finish(SyncResult.NO_CHANGE, 0, "")
            return
        header = ManifestHeader(_iso(self.clock()), self.config.upstream, len(tree.entries))
        self.store.put_manifest(self.layout.listing_key, header, tree.entries)
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
            self.layout.directory_key(e.path) if e.type is EntryType.DIR else self.layout.served_key(e.path)
            for e in plan.deletes
        )
        self._phase("manifest")
        final = [e for e in plan.target if e is not None]
        self.store.put_manifest(
            self.layout.manifest_key, ManifestHeader(_iso(self.clock()), self.config.upstream, len(final)), final
        )
        self._publish_trace(final)
        self._finish(SyncResult.SUCCESS, 0, "")

    def _transfer(
        self, plan: Plan, changes: list[Change], staging_root: Path, pool: ThreadPoolExecutor, label: str
    ) -> None:
        if not changes:
            return
        batches = make_batches(changes, max(self.config.staging_bytes // 2, 1))
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
            local = staged / change.new.path
            if local.is_symlink() or not local.is_file():
                # Vanished or changed type since the listing: keep what is published, retry next run.
                plan.target[change.index] = change.old
                self.report.vanished.append(change.new.path)
                log.warning(
                    "vanished upstream during the run; kept the published copy",
                    extra={"path": printable(change.new.path)},
                )
                return
            stat = local.stat()
            mtime = int(stat.st_mtime)
            digest = self.store.upload_file(
                self.layout.served_key(change.new.path), local, content_type(change.new.name), {MTIME_META: str(mtime)}
            )
            plan.target[change.index] = replace(change.new, size=stat.st_size, mtime=mtime, sha256=digest)
            self.report.uploaded_files += 1
            self.report.uploaded_bytes += stat.st_size
            progress.advance(1, stat.st_size)

        _run_all(pool, upload, batch)

    def _publish_links(self, plan: Plan, tree: UpstreamTree, pool: ThreadPoolExecutor) -> None:
        wanted = {tree.links[link.path].final_path for link in plan.link_entries()}
        finals = {e.path: e for e in plan.target if e is not None and e.path in wanted}

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
                final = finals.get(resolved.final_path)
                if final is None or final.type is not EntryType.FILE:
                    plan.target[index] = None
                    log.warning("symlink target not published; skipped", extra={"path": printable(link.path)})
                    return
                metadata[MTIME_META] = str(final.mtime)
                self.store.copy(
                    self.layout.served_key(final.path),
                    self.layout.served_key(link.path),
                    content_type(final.name),
                    metadata,
                )
                plan.target[index] = replace(link, sha256=final.sha256)
            self.report.links += 1

        _run_all(pool, publish, plan.links)

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
            self.report.index_pages += 1

        _run_all(pool, publish, sorted(plan.dirty_dirs))

    def _publish_trace(self, entries: Iterable[Entry | None]) -> None:
        self._phase("trace")
        count, size = 0, 0
        for entry in entries:
            if entry is not None:
                count += 1
                size += entry.size if entry.type is EntryType.FILE else 0
        self.report.mirror_entries, self.report.mirror_bytes = count, size
        body = render_trace(
            self.config.mirror_name, self.config.upstream, self.clock(), self.report.run_id, count, size
        )
        self.store.put_bytes(
            self.layout.served_key(self.config.trace_path),
            body,
            "text/plain; charset=utf-8",
            {MTIME_META: str(int(self.clock()))},
            TRACE_CACHE_CONTROL,
        )

    def _finish(self, result: SyncResult, exit_code: int, error: str) -> None:
        report = self.report
        report.result, report.exit_code, report.error = result, exit_code, error
        report.finished = self.clock()
        if self.config.dry_run or result is SyncResult.LOCKED:
            report.s3_requests = self.counter.total
            return  # touches nothing; a locked run must not overwrite the holder's report
        report.s3_requests = self.counter.total + 2  # the two report writes below
        report.s3_requests_by_operation = dict(self.counter.by_operation)
        body = report.to_bytes()
        try:
            self.store.put_bytes(self.layout.run_report_key(report.run_id), body, "application/json")
            self.store.put_bytes(self.layout.last_run_key, body, "application/json")
        except MirrorkeeperError as exc:
            log.error("could not store the run report", extra={"error": str(exc)})


def _run_all[T](pool: ThreadPoolExecutor, work: Callable[[T], None], items: Iterable[T]) -> None:
    """Run ``work`` over ``items`` in ``pool``; on the first failure cancel the rest and raise it."""
    futures = [pool.submit(work, item) for item in items]
    _, not_done = wait(futures, return_when=FIRST_EXCEPTION)
    for future in not_done:
        future.cancel()
    wait(not_done)
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]


def _ascii_meta(text: str) -> str:
    """S3 user metadata must be ASCII: percent-encode anything else (front ends decode it)."""
    return quote(text, safe="/ -._~+!$&'()*,;=:@")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
