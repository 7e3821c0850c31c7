"""``mirrorkeeper sync``: one sync run of the upstream rsync module into S3."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from contextlib import ExitStack

from mirrorkeeper.commands.common import add_location_flags, add_logging_flags, flags_of
from mirrorkeeper.config import load_sync_config
from mirrorkeeper.errors import UpstreamError
from mirrorkeeper.sync.rsync import ListingRun, RsyncClient

DESCRIPTION = """\
Sync an upstream rsync:// module into S3, incrementally and safely.

Lists the upstream, diffs it against the manifest published by the last run, fetches only what
changed (rsync --files-from, in batches bounded by --staging-bytes) and publishes in an order
that keeps the mirror consistent for clients at every instant: data, index files (Packages,
Release, repomd.xml, checksums), symlinks, directory pages, deletions, manifest, trace file.

Every flag can also be set as MIRRORKEEPER_<FLAG> (e.g. MIRRORKEEPER_UPSTREAM) or in the
--config TOML file; flags win over the environment, which wins over the file.

exit codes:
  0  synced (or nothing to do, or --dry-run with an acceptable plan)
  1  failed: upstream unreachable, rsync died, S3 kept failing, staging disk full
     (the served mirror is unchanged or consistent; the next run converges)
  2  usage or configuration error
  3  another sync holds the lock (this run did nothing)
  4  the deletion guard refused the plan (nothing was changed; see --force-delete)
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
    parser.add_argument("--upstream", help="rsync://HOST[:PORT]/MODULE/ to mirror [MIRRORKEEPER_UPSTREAM]")
    add_location_flags(parser)
    guard = parser.add_argument_group("safety")
    guard.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="print the plan and change nothing (exit 4 if a real run would be refused)",
    )
    guard.add_argument(
        "--max-delete-percent", help="refuse plans deleting more than this share of files or bytes (default: 10)"
    )
    guard.add_argument(
        "--force-delete",
        action="store_true",
        default=None,
        help="publish even when the deletion guard objects (upstream really shrank)",
    )
    guard.add_argument("--lock-ttl", help="seconds a sync lease lasts without renewal (default: 900)")
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument("--staging-dir", help="where fetched files wait for upload (default: system temp dir)")
    tuning.add_argument("--staging-bytes", help="disk budget for staged files, e.g. 8G (default: 8G)")
    tuning.add_argument("--upload-concurrency", help="parallel uploads (default: 16)")
    tuning.add_argument("--multipart-threshold", help="files above this size upload in parts (default: 64M)")
    tuning.add_argument(
        "--late-patterns",
        help="index files published after data, as tiers: "
        "'Packages*,Sources*;Release,InRelease,repomd.xml' (default: apt, yum "
        "and checksum files)",
    )
    tuning.add_argument("--trace-path", help="trace file path inside the mirror (default: .mirrorkeeper/trace)")
    tuning.add_argument("--mirror-name", help="name shown in the trace file and index pages (default: the bucket)")
    tuning.add_argument("--rsync-command", help="rsync program and fixed options (default: rsync)")
    tuning.add_argument(
        "--rsync-timeout",
        help="seconds the upstream may stay silent (no new listed entry, no fetch I/O) before rsync is stopped "
        "and the run fails (default: 300)",
    )
    add_logging_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_sync_config(flags_of(args))
    rsync = RsyncClient(config.rsync_command, config.rsync_timeout)
    with ExitStack() as stack:
        # Listing upstream takes about as long as importing boto3 and building its client: start
        # rsync first, before even the logging set-up, so the two overlap (for a run with nothing
        # to do, they are most of its time).
        try:
            listing: ListingRun | None = stack.enter_context(rsync.start_list(config.upstream))
        except UpstreamError:
            listing = None  # rsync cannot start: the run tries again and records the failure in its report
        from mirrorkeeper.logs import setup_logging

        interactive = setup_logging(args.log_format, args.log_level)
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
        report = SyncRun(config, client, counter, rsync=rsync, interactive=interactive, listing=listing).run()
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
        )
    }
    print(json.dumps(summary), file=sys.stdout if not config.dry_run else sys.stderr)
    return report.exit_code
