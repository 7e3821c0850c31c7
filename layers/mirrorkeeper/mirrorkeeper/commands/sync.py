"""``mirrorkeeper sync``: one sync run of the upstream rsync module into S3."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from mirrorkeeper.config import (
    SYNC,
    ConfigFile,
    SyncConfig,
    add_flags,
    flags_of,
    read_config,
    resolve,
    settings_for,
    sync_config,
)
from mirrorkeeper.errors import (
    ConfigError,
    ExitCode,
    LockHeldError,
    MirrorkeeperError,
    StorageError,
    UpstreamError,
    worst,
)
from mirrorkeeper.sync.rsync import ListingRun, RsyncClient
from mirrorkeeper.sync.upstream import UpstreamTrace, fetch_trace

DESCRIPTION = """\
Sync an upstream rsync:// module into S3, incrementally and safely.

Lists the upstream, diffs it against the manifest published by the last run, fetches only what
changed (rsync --files-from, in batches bounded by --staging-bytes) and publishes in an order
that keeps the mirror consistent for clients at every instant: data, index files (Packages,
Release, repomd.xml, checksums), symlinks, directory pages, deletions, manifest, trace file.

Every flag can also be set as MIRRORKEEPER_<FLAG> (e.g. MIRRORKEEPER_UPSTREAM) or in the
--config TOML file; flags win over the environment, which wins over the file.

Nothing one path does can stop the mirror: a file upstream will not send (unreadable, vanished)
or S3 will not store is skipped for this run and keeps its published copy, an index file that
names it is held back with it, everything else is published (exit 5). A path that fails the same
way --quarantine-after runs in a row is quarantined: retried daily, reported, alerted once. A
file larger than half of --staging-bytes is streamed into S3 as it arrives.

Freshness at upstream's speed: with --upstream-trace the run first fetches just upstream's trace
file, and ends at once ("upstream-unchanged", exit 0, four S3 requests) when it is byte-identical
to the one the last successful run saw, unless a full listing is due (--full-listing-every). An
upstream caught mid-update is never half-published: the run waits (--busy-wait) and lists again.
Each published run writes our trace (.mirrorkeeper/trace), an ftpsync-compatible trace
(project/trace/<host name>) and a timestamp file mirmon reads (.mirrorkeeper/timestamp), last.

The deletion guard holds deletions, never the rest: when a plan deletes more than
--max-delete-percent of the files or bytes (and more than --min-delete-guard files), or more than
--max-delete files, or the listing is incomplete or empty, the deletions wait (still served, still
in the manifest) and everything else is published (exit 4). --force-delete deletes anyway.

exit codes:
  0  synced (or nothing to do, or --dry-run with an acceptable plan)
  1  failed: upstream unreachable, rsync died, S3 kept failing, staging disk full
     (the served mirror is unchanged or consistent; the next run converges)
  2  usage or configuration error
  3  another sync holds the lock (this run did nothing)
  4  published, but the deletion guard held the deletions (see --force-delete)
  5  published, but some paths were skipped (the run report lists them; the next run retries)
  6  upstream busy: it was mid-update (Archive-Update-in-Progress-*, --busy-marker, or its trace
     changed while we fetched) for all of --busy-wait; nothing beyond data was published
  130  stopped by SIGTERM (ECS stopping the task) or Ctrl-C: the lease is released and the
       report written; the served mirror is consistent, the next run completes the job
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sync",
        help="sync the upstream rsync module into S3 (the container task)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, SYNC)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    flags = flags_of(args)
    values = resolve(SYNC, flags)
    host = read_config(SYNC, flags, os.environ)
    if values["all"]:
        return sync_all(flags, host)
    if host.mirrors and not values["mirror"]:
        raise ConfigError(
            f"config file {host.path} has mirrors ({', '.join(host.mirrors)}): name one with --mirror NAME, or --all"
        )
    return sync_one(values)


def sync_all(flags: dict[str, Any], host: ConfigFile) -> int:
    """Every enabled mirror of the host, one after another, each with its own lease: one failing never
    stops the others. The exit code is the most serious of theirs; each that did not end cleanly gets
    its line on stderr."""
    for name in ("upstream", "path", "mirror"):
        setting = settings_for(SYNC)[name]
        if flags.get(name) is not None or setting.env in os.environ:
            raise ConfigError(f"{setting.flag} ({setting.env}) names one mirror: it cannot apply to --all")
    if not host.mirrors:
        raise ConfigError("--all syncs the mirrors of a config file: give one with --config (MIRRORKEEPER_CONFIG)")
    codes: dict[str, int] = {}
    for name in host.mirrors:
        values = resolve(SYNC, flags, mirror=name)
        if not values["enabled"] or values["paused"]:
            print(json.dumps({"mirror": name, "result": "paused" if values["enabled"] else "disabled"}))
            continue
        try:
            codes[name] = sync_one(values, prefix=f"{name}: ")
        except MirrorkeeperError as exc:
            codes[name] = int(exc.exit_code)
            result = "locked" if exc.exit_code is ExitCode.LOCKED else "failed"
            print(json.dumps({"mirror": name, "result": result, "exit_code": codes[name]}))
            print(f"mirrorkeeper sync: {name}: error: {exc}", file=sys.stderr)
    code = worst(list(codes.values()))
    if code:
        bad = ", ".join(f"{name} exit {c}" for name, c in codes.items() if c)
        print(
            f"mirrorkeeper sync: {len([c for c in codes.values() if c])} of {len(codes)} mirrors did not sync "
            f"cleanly ({bad}); each has its own line above and its own run report",
            file=sys.stderr,
        )
    return code


def sync_one(values: dict[str, Any], prefix: str = "") -> int:
    config = sync_config(values)
    password = ""
    if config.rsync_password:
        from mirrorkeeper.credentials import read_secret

        what = f"[mirrors.{config.mirror}] rsync_password" if config.mirror else "--rsync-password"
        password = read_secret(config.rsync_password, config.aws, what)
    if not config.push_secret or config.dry_run:
        return sync_once(config, values, password, prefix)
    return sync_following_pushes(config, lambda: sync_once(config, values, password, prefix), prefix)


def sync_following_pushes(config: SyncConfig, once: Callable[[], int], prefix: str) -> int:
    """``once()``, then once more for as long as pushes arrived during the last run (sync/followups.py).
    The exit code is the last run's; an earlier run's failure gets its line on stderr."""
    import logging

    from mirrorkeeper.aws import s3_client
    from mirrorkeeper.state import StateStore
    from mirrorkeeper.sync.followups import FollowUps

    log = logging.getLogger(__name__)
    followups: FollowUps | None = None
    code = waiting = 0
    while True:
        failure: MirrorkeeperError | None = None
        try:
            code = once()
        except LockHeldError:
            if followups is None:
                raise  # another sync's run: pushes that come while it runs are its to follow up
            try:
                followups.give_back(waiting)
            except StorageError as exc:
                log.warning("pushes could not be handed to the running sync", extra={"error": str(exc)})
            print(
                f"mirrorkeeper sync: {prefix}another sync took the lease first; it follows the pushes", file=sys.stderr
            )
            return code
        except MirrorkeeperError as exc:
            failure, code = exc, int(exc.exit_code)
        followups = followups or FollowUps(StateStore(s3_client(config.aws), config.layout))
        try:
            waiting = followups.take()
        except StorageError as exc:
            log.warning("could not look for pushes that arrived during the run", extra={"error": str(exc)})
            waiting = 0
        if not waiting:
            if failure is not None:
                raise failure
            return code
        if failure is not None:
            print(f"mirrorkeeper sync: {prefix}error: {failure}", file=sys.stderr)
        log.info("pushes arrived during the run: syncing once more", extra={"pushes": waiting})


def sync_once(config: SyncConfig, values: dict[str, Any], password: str, prefix: str) -> int:
    """One run: its summary on stdout, its exit code returned (a failure that stops it raised)."""
    rsync = RsyncClient.for_sync(config, password)
    with ExitStack() as stack:
        # Listing upstream takes about as long as importing boto3 and building its client: start
        # rsync first, before even the logging set-up, so the two overlap (for a run with nothing
        # to do, they are most of its time).
        listing: ListingRun | None = None
        trace: Future[UpstreamTrace | str] | None = None
        # With an upstream trace the run may never need a listing: what it needs first is the trace,
        # fetched meanwhile (the listing, if any, it starts itself). When rsync cannot start, the run
        # tries again and records the failure in its report.
        if config.upstream_trace and not config.dry_run:
            fetching = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="trace"))
            trace = fetching.submit(fetch_trace, rsync, config.upstream, config.upstream_trace, None)
        elif not config.upstream_trace:
            with contextlib.suppress(UpstreamError):
                listing = stack.enter_context(rsync.start_list(config.upstream))
        from mirrorkeeper.logs import setup_logging

        interactive = setup_logging(values["log_format"], values["log_level"])
        # What follows allocates a lot and frees nothing (modules, boto3's models): collecting
        # while it runs is wasted time (about 25 ms), and frozen afterwards it is skipped by every
        # later collection, the ones at interpreter exit included (about 60 ms with boto3 loaded).
        # Together that is over a quarter of a run with nothing to do.
        gc.disable()
        try:
            from mirrorkeeper.aws import RequestCounter, s3_client
            from mirrorkeeper.sync.run import SyncRun

            counter = RequestCounter()
            client = s3_client(config.aws, counter, pool_size=config.upload_concurrency + 8)
        finally:
            gc.freeze()
            gc.enable()
        report = SyncRun(
            config, client, counter, rsync=rsync, interactive=interactive, listing=listing, trace=trace
        ).run()
    summary = {
        k: report.to_json()[k]
        for k in (
            "result",
            "run_id",
            "duration",
            "plan",
            "uploaded_files",
            "uploaded_bytes",
            "deleted_objects",
            "s3_requests",
            "skipped_total",
            "failed_total",
            "held_deletions",
        )
    }
    if config.mirror:
        summary = {"mirror": config.mirror, **summary}
    print(json.dumps(summary), file=sys.stdout if not config.dry_run else sys.stderr)
    if report.exit_code:
        # Held deletions (4) and skipped paths (5) end a run that published: say so in one line.
        print(f"mirrorkeeper sync: {prefix}{report.error}", file=sys.stderr)
    return report.exit_code
