"""``make bench``: the trace shortcut (issue 14) against the rsync floor, on one generated tree.

A no-change run with ``--upstream-trace`` fetches one small file instead of listing the tree. It is
timed against (a) ``rsync -a --delete`` of the same module into a local copy that is already
current (the floor: what any rsync-based mirror pays to learn that nothing changed) and (b) the
same mirrorkeeper no-change run without the trace (today's no-change: a full listing), all in the
same run on the same tree. Targets: at most 0.2x the floor, at most 4 S3 requests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import MotoServer, compile_mirrorkeeper, run_in_workdir
from report import Outcome
from run import Bench, Tree, clean_env, median_outcome, progress

from mirrorkeeper_dev.rsyncd import RsyncDaemon

BUCKET = "bench-freshness"
TRACE = "project/trace/master"
TRACE_VS_FLOOR_MAX = 0.2
TRACE_REQUESTS_MAX = 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/freshness.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000, help="files in the tree (200000)")
    parser.add_argument("--bytes", type=int, default=200_000_000, help="total bytes of the tree (200000000)")
    parser.add_argument("--repeat", type=int, default=5, help="no-change runs per tool; the median counts (5)")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds any one step may take (7200)")
    args = parser.parse_args(argv)
    if args.files < 100 or args.bytes < args.files or args.repeat < 1:
        parser.error("--files must be at least 100, --bytes at least --files, --repeat at least 1")
    return args


def median_of(repeat: int, what: str, measure: Callable[[], Outcome]) -> Outcome:
    outcomes = []
    for attempt in range(repeat):
        progress(f"{what} ({attempt + 1}/{repeat})")
        outcomes.append(measure())
    return median_outcome(outcomes)


def run_all(args: argparse.Namespace, workdir: Path) -> list[str]:
    tempfile.tempdir = str(workdir / "tmp")
    started = time.monotonic()
    compile_mirrorkeeper()
    progress(f"generating {args.files} files, {args.bytes} bytes")
    tree = Tree.generate(workdir / "upstream", args.files - 1, args.bytes)
    (tree.root / TRACE).parent.mkdir(parents=True, exist_ok=True)
    (tree.root / TRACE).write_text(f"{time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}\n")
    trace = ("--upstream-trace", TRACE)
    with MotoServer(workdir, clean_env(workdir, "")) as moto, RsyncDaemon(tree.root) as daemon:
        bench = Bench(workdir, moto, clean_env(workdir, moto.url), args.timeout)
        bench.create_bucket(BUCKET)
        startup = bench.startup()
        progress("first sync (mirrorkeeper) and first copy (rsync)")
        bench.keeper(daemon.url, BUCKET, "success", args.files, trace)
        bench.rsync(daemon.url, workdir / "floor")
        floor = median_of(
            args.repeat, "(a) rsync -a --delete, current copy", lambda: bench.rsync(daemon.url, workdir / "floor")
        )
        listing = median_of(
            args.repeat, "(b) no-change, full listing", lambda: bench.keeper(daemon.url, BUCKET, "no-change", 0)
        )
        shortcut = median_of(
            args.repeat,
            "(c) no-change, trace unchanged",
            lambda: bench.keeper(daemon.url, BUCKET, "upstream-unchanged", 0, trace),
        )
    ratio = shortcut.wall / floor.wall
    requests_met = (shortcut.requests or 0) <= TRACE_REQUESTS_MAX
    return [
        f"trace shortcut, {args.files} files, {tree.total_bytes} bytes, median of {args.repeat} runs each",
        f"  {'':38} {'wall s':>8} {'S3 requests':>12}",
        f"  {'(a) rsync -a --delete (the floor)':38} {floor.wall:8.2f} {'-':>12}",
        f"  {'(b) mirrorkeeper, full listing':38} {listing.wall:8.2f} {listing.requests:12d}",
        f"  {'(c) mirrorkeeper, --upstream-trace':38} {shortcut.wall:8.2f} {shortcut.requests:12d}",
        f"  (c) / (a) = {ratio:.3f}x the floor (target <= {TRACE_VS_FLOOR_MAX}x): "
        f"{'met' if ratio <= TRACE_VS_FLOOR_MAX else 'MISSED'}",
        f"  (c) / (b) = {shortcut.wall / listing.wall:.3f}x today's no-change run",
        f"  (c) S3 requests {shortcut.requests} (target <= {TRACE_REQUESTS_MAX}): {'met' if requests_met else 'MISSED'}"
        f"; moto logged {shortcut.logged_requests}",
        f"  interpreter start and imports alone: {startup:.2f} s; elapsed {time.monotonic() - started:.0f} s",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("freshness", lambda workdir: run_all(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
