"""``make bench``: mirrorkeeper against named baselines, on one generated tree, in one run.

(a) ``rsync -a --delete`` from the upstream's rsync daemon into a local directory: the floor;
(b) the same rsync plus ``aws s3 sync --delete`` into another bucket: the naive pipeline;
(c) ``mirrorkeeper sync`` into its own bucket.

Each is timed on a first sync, a no-change sync and a 1 %-changed sync of the same upstream;
then mirrorkeeper alone syncs a tree with ten times the files to compare its peak memory.
bench/README.md says how to read the output. Everything lives in one temporary directory,
removed at the end; every process is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import boto3
from harness import BenchError, Measured, MotoServer, compile_mirrorkeeper, run_measured
from report import Outcome, Row, print_report

from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import TreeSpec, generate_tree, mutate

NAIVE_BUCKET = "bench-naive"
KEEPER_BUCKET = "bench-mirrorkeeper"
BIG_BUCKET = "bench-mirrorkeeper-big"
FIRST, NO_CHANGE, CHANGED = "first sync", "no-change", "1%-changed"
NODELAY = "--sockopts=TCP_NODELAY"  # as mirrorkeeper runs rsync: shown beside the floor, for context


@dataclass(frozen=True)
class Options:
    files: int
    bytes: int
    big_files: int
    big_bytes: int
    skip_big: bool
    repeat: int
    timeout: float
    json_path: Path | None


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Time mirrorkeeper sync against rsync (the floor) and rsync + aws s3 sync (the naive "
        "pipeline) on a generated tree served by a local rsync daemon into a local moto server.",
    )
    parser.add_argument("--files", type=int, help="files in the main tree (default: 20000; --quick: 2000)")
    parser.add_argument("--bytes", type=int, help="total bytes of the main tree (default: 200000000)")
    parser.add_argument(
        "--big-files", type=int, help="files in the memory-run tree (default: 10x --files, i.e. 200000)"
    )
    parser.add_argument("--big-bytes", type=int, help="total bytes of the memory-run tree (default: --bytes)")
    parser.add_argument("--skip-big", action="store_true", help="skip the memory run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 2000-file smoke run, well under a minute (no memory run unless --big-files is given)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="no-change runs per tool; the median counts (3)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds any one step may take (3600)")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    files = args.files or (2000 if args.quick else 20000)
    size = args.bytes or (20_000_000 if args.quick else 200_000_000)
    if files < 100 or size < files or args.repeat < 1:
        parser.error("--files must be at least 100, --bytes at least --files, --repeat at least 1")
    big_files = args.big_files or 10 * files
    return Options(
        files=files,
        bytes=size,
        big_files=big_files,
        big_bytes=args.big_bytes or size,
        skip_big=args.skip_big or (args.quick and not args.big_files),
        repeat=args.repeat,
        timeout=args.timeout,
        json_path=args.json_path,
    )


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def clean_env(workdir: Path, endpoint: str) -> dict[str, str]:
    """The environment of every measured process: dummy credentials, no user AWS config, the local
    endpoint, temporary files (moto's spools, mirrorkeeper's staging) inside the work directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MIRRORKEEPER_", "BOTO"))}
    nowhere = str(workdir / "no-aws-config")
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
            "AWS_CONFIG_FILE": nowhere,
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": endpoint,
            "TMPDIR": str(workdir / "tmp"),
        }
    )
    return env


@dataclass
class Tree:
    root: Path
    paths: list[str]
    total_bytes: int

    @classmethod
    def generate(cls, root: Path, files: int, total_bytes: int) -> Tree:
        paths = generate_tree(root, TreeSpec(files=files, total_bytes=total_bytes, max_depth=3, fanout=8))
        return cls(root, paths, sum((root / p).stat().st_size for p in paths))


@dataclass
class Bench:
    workdir: Path
    moto: MotoServer
    env: dict[str, str]
    timeout: float
    s3: Any = field(init=False)

    def __post_init__(self) -> None:
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.moto.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def run(self, args: Sequence[str], what: str) -> Measured:
        return run_measured(args, self.env, self.workdir, self.timeout, cwd=self.workdir).check(what)

    def create_bucket(self, name: str) -> None:
        self.s3.create_bucket(Bucket=name)

    def count_objects(self, bucket: str) -> int:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(page.get("KeyCount", 0) for page in pages)

    # (a) the floor
    def rsync(self, url: str, dest: Path, *options: str) -> Outcome:
        dest.mkdir(exist_ok=True)
        ran = self.run(["rsync", "-a", "--delete", *options, url, f"{dest}/"], "rsync -a --delete")
        return Outcome(wall=ran.wall, rss_mib=ran.max_rss_mib)

    # (b) the naive pipeline
    def naive(self, url: str, dest: Path, bucket: str) -> Outcome:
        fetched = self.rsync(url, dest)
        aws = Path(sys.executable).parent / "aws"
        if not aws.exists():
            raise BenchError(f"{aws} is missing: run 'make bench', which installs requirements-bench.txt")
        offset = self.moto.log_offset()
        command = [str(aws), "s3", "sync", "--delete", "--only-show-errors", "--endpoint-url", self.moto.url]
        synced = self.run([*command, f"{dest}/", f"s3://{bucket}/"], "aws s3 sync --delete")
        return Outcome(
            wall=fetched.wall + synced.wall,
            rss_mib=max(fetched.rss_mib, synced.max_rss_mib),
            requests=self.moto.requests_since(offset),
            parts=(fetched.wall, synced.wall),
        )

    # (c) mirrorkeeper
    def keeper(self, url: str, bucket: str, result: str, uploads: int, extra: Sequence[str] = ()) -> Outcome:
        offset = self.moto.log_offset()
        ran = self.run(
            [
                sys.executable,
                "-m",
                "mirrorkeeper",
                "sync",
                "--upstream",
                url,
                "--bucket",
                bucket,
                "--log-format",
                "json",
                *extra,
            ],
            "mirrorkeeper sync",
        )
        logged = self.moto.requests_since(offset)
        lines = [line for line in ran.stdout.splitlines() if line.strip()]
        try:
            summary = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise BenchError(f"mirrorkeeper sync printed no JSON summary: {ran.stdout[-300:]!r}") from None
        if summary.get("result") != result or summary.get("uploaded_files") != uploads:
            raise BenchError(
                f"mirrorkeeper sync: expected result {result!r} with {uploads} uploads, got "
                f"{summary.get('result')!r} with {summary.get('uploaded_files')}: {lines[-1]}"
            )
        return Outcome(
            wall=ran.wall,
            rss_mib=ran.max_rss_mib,
            cpu=ran.cpu,
            requests=int(summary["s3_requests"]),
            logged_requests=logged,
            inner=float(summary.get("duration", 0.0)),
            uploads=int(summary["uploaded_files"]),
        )

    def startup(self) -> float:
        """Interpreter start plus the modules a sync run imports: what every run pays (while rsync lists)."""
        command = [sys.executable, "-c", "import mirrorkeeper.cli, mirrorkeeper.commands.sync, mirrorkeeper.sync.run"]
        return statistics.median(self.run(command, "importing mirrorkeeper sync").wall for _ in range(3))


def median_outcome(outcomes: list[Outcome]) -> Outcome:
    """The run with the median wall time (its own counts and parts), with the peak RSS of all runs."""
    ordered = sorted(outcomes, key=lambda o: o.wall)
    middle = ordered[(len(ordered) - 1) // 2]
    return Outcome(
        wall=middle.wall,
        rss_mib=max(o.rss_mib for o in outcomes),
        cpu=middle.cpu,
        requests=middle.requests,
        logged_requests=middle.logged_requests,
        inner=middle.inner,
        uploads=middle.uploads,
        parts=middle.parts,
        runs=len(outcomes),
    )


def timed(what: str, work: Callable[[], Outcome]) -> Outcome:
    outcome = work()
    progress(f"  {what}: {outcome.wall:.2f} s")
    return outcome


def run_main(options: Options, bench: Bench, tree: Tree, daemon_url: str) -> dict[str, Row]:
    floor_dir, naive_dir = bench.workdir / "floor", bench.workdir / "naive"
    bench.create_bucket(NAIVE_BUCKET)
    bench.create_bucket(KEEPER_BUCKET)
    rows: dict[str, Row] = {}
    count = len(tree.paths)

    def scenario(name: str, result: str, uploads: int, repeat: int) -> None:
        progress(f"{name} ({repeat} run{'s' if repeat > 1 else ''} each)")
        floor, naive, keeper, tuned = [], [], [], []
        for _ in range(repeat):
            floor.append(timed("(a) rsync", lambda: bench.rsync(daemon_url, floor_dir)))
            naive.append(timed("(b) rsync + aws s3 sync", lambda: bench.naive(daemon_url, naive_dir, NAIVE_BUCKET)))
            keeper.append(timed("(c) mirrorkeeper", lambda: bench.keeper(daemon_url, KEEPER_BUCKET, result, uploads)))
            if name == NO_CHANGE:
                tuned.append(timed(f"(a) rsync {NODELAY}", lambda: bench.rsync(daemon_url, floor_dir, NODELAY)))
        in_bucket = bench.count_objects(NAIVE_BUCKET)
        if in_bucket != count:
            raise BenchError(f"after {name}, aws s3 sync left {in_bucket} objects for {count} upstream files")
        rows[name] = Row(
            median_outcome(floor),
            median_outcome(naive),
            median_outcome(keeper),
            median_outcome(tuned) if tuned else None,
        )

    scenario(FIRST, "success", count, 1)
    scenario(NO_CHANGE, "no-change", 0, options.repeat)
    done = mutate(tree.root, tree.paths, 0.01)
    progress(
        f"mutated upstream: {len(done['changed'])} changed, {len(done['deleted'])} deleted, {len(done['added'])} added"
    )
    scenario(CHANGED, "success", len(done["changed"]) + len(done["added"]), 1)
    return rows


def run_big(bench: Bench, tree: Tree, daemon_url: str) -> dict[str, Outcome]:
    bench.moto.reset()  # drop the main run's objects: the server's memory is not measured, but it is shared
    bench.create_bucket(BIG_BUCKET)
    progress(f"memory run: {len(tree.paths)} files")
    first = timed("(c) first sync", lambda: bench.keeper(daemon_url, BIG_BUCKET, "success", len(tree.paths)))
    nochange = timed("(c) no-change", lambda: bench.keeper(daemon_url, BIG_BUCKET, "no-change", 0))
    return {FIRST: first, NO_CHANGE: nochange}


def run_all(options: Options, workdir: Path) -> int:
    (workdir / "tmp").mkdir()
    tempfile.tempdir = str(workdir / "tmp")  # the rsync daemons' config dirs land here, and go with it
    started, load_before = time.monotonic(), os.getloadavg()[0]
    compile_mirrorkeeper()
    progress(f"generating {options.files} files, {options.bytes} bytes")
    tree = Tree.generate(workdir / "upstream", options.files, options.bytes)
    with MotoServer(workdir, clean_env(workdir, "")) as moto:
        bench = Bench(workdir, moto, clean_env(workdir, moto.url), options.timeout)
        startup = bench.startup()
        with RsyncDaemon(tree.root) as daemon:
            rows = run_main(options, bench, tree, daemon.url)
        for leftover in ("floor", "naive", "upstream"):
            shutil.rmtree(workdir / leftover, ignore_errors=True)
        big: dict[str, Outcome] = {}
        big_tree: Tree | None = None
        if not options.skip_big:
            progress(f"generating {options.big_files} files, {options.big_bytes} bytes")
            big_tree = Tree.generate(workdir / "upstream-big", options.big_files, options.big_bytes)
            with RsyncDaemon(big_tree.root) as daemon:
                big = run_big(bench, big_tree, daemon.url)
    results = print_report(
        files=len(tree.paths),
        total_bytes=tree.total_bytes,
        rows=rows,
        startup=startup,
        big_files=len(big_tree.paths) if big_tree else 0,
        big_bytes=big_tree.total_bytes if big_tree else 0,
        big=big,
        repeat=options.repeat,
        elapsed=time.monotonic() - started,
        loads=(load_before, os.getloadavg()[0]),
    )
    if options.json_path:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop servers and clean up


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="mirrorkeeper-bench-"))
    try:
        return run_all(options, workdir)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
