"""serve-rsync benchmark (issue 15, "Performance"), against baselines measured in the same run.

One generated upstream tree (20,000 files, about 200 MB: ``--files``, ``--bytes``) and one 100 MB
file (``--big-mb``) on a real rsync daemon on 127.0.0.1, one moto server in its own process, each
synced into a bucket of its own, and a ``serve-rsync`` over each bucket (``--host 127.0.0.1``).

1. **Catch-up**: after ``sampletree.mutate(fraction=0.01)`` (1% of the files changed, 1% deleted,
   1% added), the sync that publishes the change is timed by the launcher in harness.py (process
   start included): the baseline. serve-rsync is held still (SIGSTOP) while it runs, so the clock and
   the count start when the change is published and serve-rsync alone talks to S3; then it is let go
   and timed until its module's link names the new snapshot (``--poll-interval`` 0.2 s: noticing is
   part of it), and held again. Its S3 GETs are counted from the moto server's request log. Targets:
   GETs at most 1.1x the files to fetch (changed + added: a deletion needs none); catch-up at most
   2x the sync.
2. **Pull throughput**: ``rsync -a rsync://127.0.0.1:P/MODULE/big.bin DIR/`` into an empty
   directory, from serve-rsync's replica and, the baseline, from the rsync daemon serving the
   upstream's plain directory holding the same file; ``--rounds`` rounds in alternating order,
   medians. Target: serve-rsync at least 0.9x the baseline's MB/s.

Every step must succeed (each sync ``success``, each pull exit 0 with the file's size); anything
else stops the run with ``bench: error:`` and exit 1.

Run: ``.venv/bin/python bench/rsync.py`` (several minutes on two cores, most of it the first sync
and the first replica build of the tree); ``--quick`` for a smoke run; ``--pull-only`` for part 2
alone (no tree is generated), to iterate on the pull throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness import BenchError, MotoServer, compile_mirrorkeeper, run_in_workdir, run_measured
from host import MIRRORKEEPER, first_sync, local_aws, progress, verdict
from report import ratio, table

from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import TreeSpec, generate_tree, mutate, write_file
from mirrorkeeper_dev.services import ServiceStartError, serving, wait_for_replicas

TREE_BUCKET, BIG_BUCKET = "bench-rsync-tree", "bench-rsync-big"
MODULE = "mirror"  # serve-rsync's module for a single mirror
BIG_NAME = "big.bin"
# serve-rsync's look at the manifest's version while catching up, short so that noticing costs little.
# The pulls run at its default (30 s): five looks a second would take CPU from the daemon on two cores.
POLL_INTERVAL = 0.2
GETS_PER_FILE_MAX = 1.1  # issue 15: catch-up GETs <= 1.1x the changed files
CATCH_UP_VS_SYNC_MAX = 2.0  # issue 15: catch-up <= 2x the sync that published the change
PULL_VS_PLAIN_MIN = 0.9  # issue 15: pull throughput >= 0.9x the plain daemon's


@contextmanager
def serve_rsync(bucket: str, replica: Path, env: dict[str, str], *extra: str) -> Iterator[tuple[int, int]]:
    """serve-rsync over ``bucket`` (with ``extra`` flags) until the block ends; yields its process id
    and port once its module serves the complete replica (the first build ended)."""
    replica.mkdir()
    port = free_port()
    command = [
        *MIRRORKEEPER, "serve-rsync", "--bucket", bucket, "--replica-dir", str(replica), "--host", "127.0.0.1",
        "--port", str(port), *extra,
    ]  # fmt: skip
    with serving(command, port, env, "serve-rsync") as process:
        try:
            wait_for_replicas(process, [replica / MODULE], timeout=1800)
        except ServiceStartError as exc:
            raise BenchError(str(exc)) from None
        yield process.pid, port


def catch_up(
    upstream: Path, paths: list[str], daemon: RsyncDaemon, moto: MotoServer, env: dict[str, str], workdir: Path
) -> list[str]:
    with serve_rsync(TREE_BUCKET, workdir / "replica-tree", env, "--poll-interval", str(POLL_INTERVAL)) as (pid, _):
        link = workdir / "replica-tree" / MODULE
        before = os.readlink(link)
        done = mutate(upstream, paths, 0.01)
        to_fetch = len(done["changed"]) + len(done["added"])
        progress(f"mutated upstream: {len(done['changed'])} changed, {len(done['deleted'])} deleted, "
                 f"{len(done['added'])} added; the sync that publishes it")  # fmt: skip
        # Held still while the sync runs: it could otherwise start catching up before the sync's
        # process ends, and its GETs would mix with the sync's in the moto server's log.
        os.kill(pid, signal.SIGSTOP)
        sync = run_measured(
            [*MIRRORKEEPER, "sync", "--upstream", daemon.url, "--bucket", TREE_BUCKET], env, workdir, 900
        )
        summary = json.loads(sync.check("the 1%-changed sync").stdout)
        if summary["result"] != "success":
            raise BenchError(f"the 1%-changed sync was {summary['result']}, not success")
        offset = moto.log_offset()
        started = time.monotonic()
        os.kill(pid, signal.SIGCONT)
        while os.readlink(link) == before:
            if time.monotonic() - started > 900:
                raise BenchError("serve-rsync had not switched to the new snapshot after 900 s")
            time.sleep(0.01)
        seconds = time.monotonic() - started
        os.kill(pid, signal.SIGSTOP)  # its next polls (a HEAD, a trace GET) are no part of the catch-up
        gets = moto.requests_since(offset, "GET")
        os.kill(pid, signal.SIGCONT)
    rows = [
        ["sync publishing the change (baseline)", f"{sync.wall:.2f}", str(summary["s3_requests"]), "-"],
        ["serve-rsync catch-up", f"{seconds:.2f}", str(gets), str(to_fetch)],
    ]
    return [
        f"replica catch-up after a 1% change of {len(paths):,} files (poll interval {POLL_INTERVAL} s included)",
        *table(["step", "seconds", "S3 requests (sync) / GETs", "files to fetch"], rows),
        f"  ratio: {ratio(gets / to_fetch)} GETs per file to fetch; catch-up {ratio(seconds / sync.wall)} the sync",
        verdict(gets <= GETS_PER_FILE_MAX * to_fetch, f"GETs <= {GETS_PER_FILE_MAX}x files to fetch", f"{gets}"),
        verdict(
            seconds <= CATCH_UP_VS_SYNC_MAX * sync.wall,
            f"catch-up <= {CATCH_UP_VS_SYNC_MAX:g}x the sync",
            ratio(seconds / sync.wall),
        ),
    ]


def pull_throughput(big: Path, daemon: RsyncDaemon, env: dict[str, str], workdir: Path, rounds: int) -> list[str]:
    size = big.stat().st_size
    with serve_rsync(BIG_BUCKET, workdir / "replica-big", env) as (_, served_port):
        sources = {
            "plain directory, rsync daemon (baseline)": f"rsync://127.0.0.1:{daemon.port}/big/{BIG_NAME}",
            "serve-rsync replica": f"rsync://127.0.0.1:{served_port}/{MODULE}/{BIG_NAME}",
        }
        speeds: dict[str, list[float]] = {label: [] for label in sources}
        into = workdir / "pulled"
        for number in range(rounds):
            for label in list(sources) if number % 2 == 0 else reversed(sources):
                shutil.rmtree(into, ignore_errors=True)
                into.mkdir()
                # Each pull starts with nothing left to write back: not the replica's download, nor the
                # previous pull's copy, whose flushing would otherwise slow whichever pull came next.
                os.sync()
                pulled = run_measured(["rsync", "-a", sources[label], f"{into}/"], env, workdir, 300)
                pulled.check(f"rsync from the {label}")
                if (into / BIG_NAME).stat().st_size != size:
                    raise BenchError(f"the pull from the {label} did not bring the whole file")
                speeds[label].append(size / 1e6 / pulled.wall)
    medians = {label: statistics.median(done) for label, done in speeds.items()}
    baseline, served = medians.values()
    rows = [[label, " ".join(f"{s:.0f}" for s in done), f"{medians[label]:.0f}"] for label, done in speeds.items()]
    return [
        f"client pull of a {size / 1e6:.0f} MB file, rsync -a into an empty directory ({rounds} rounds, "
        "alternating; medians)",
        *table(["source", "MB/s (each round)", "median MB/s"], rows),
        f"  ratio: {ratio(served / baseline)} the plain daemon's throughput",
        verdict(
            served >= PULL_VS_PLAIN_MIN * baseline,
            f"pull >= {PULL_VS_PLAIN_MIN}x plain daemon",
            ratio(served / baseline),
        ),
    ]


def bench_rsync(workdir: Path, files: int, total_bytes: int, big_mb: int, rounds: int, pull_only: bool) -> list[str]:
    upstream, plain = workdir / "upstream", workdir / "plain"
    if pull_only:
        progress(f"generating a {big_mb} MB file")
        upstream.mkdir()
        paths = []
    else:
        progress(f"generating {files} files ({total_bytes / 1e6:.0f} MB) and a {big_mb} MB file")
        paths = generate_tree(upstream, TreeSpec(files=files, total_bytes=total_bytes, seed=15))
    big = plain / BIG_NAME
    write_file(big, os.urandom(big_mb * 1_000_000), 1_700_000_000)
    compile_mirrorkeeper()
    with ExitStack() as stack:
        moto, env = local_aws(stack, workdir, (TREE_BUCKET, BIG_BUCKET))
        daemon = stack.enter_context(RsyncDaemon(upstream, more={"big": plain}))
        lines: list[str] = []
        if not pull_only:
            progress("first sync of the tree")
            first_sync(["--upstream", daemon.url, "--bucket", TREE_BUCKET], env, "the tree")
            progress("serve-rsync's first build of the tree")
            lines = [*catch_up(upstream, paths, daemon, moto, env, workdir), ""]
        progress("first sync of the big file")
        first_sync(["--upstream", daemon.url_of("big"), "--bucket", BIG_BUCKET], env, "the big file")
        progress("pull throughput")
        return [*lines, *pull_throughput(big, daemon, env, workdir, rounds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000, help="files in the tree (default 20,000)")
    parser.add_argument("--bytes", type=int, default=200_000_000, help="the tree's total size (default 200 MB)")
    parser.add_argument("--big-mb", type=int, default=100, help="the pulled file's size in MB (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="pulls from each source (default 5; medians count)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 files of 20 MB, a 20 MB file, 3 rounds")
    parser.add_argument(
        "--pull-only", action="store_true", help="part 2 alone (no tree, no catch-up): to iterate on pull throughput"
    )
    options = parser.parse_args(argv)
    files, total, big, rounds = (
        (2000, 20_000_000, 20, 3) if options.quick else (options.files, options.bytes, options.big_mb, options.rounds)
    )
    return run_in_workdir(
        "rsync", lambda workdir: bench_rsync(workdir, files, total, big, rounds, pull_only=options.pull_only)
    )


if __name__ == "__main__":
    sys.exit(main())
