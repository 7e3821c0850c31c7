"""Verification benchmark (issue 4), against baselines measured in the same run.

1. **Diff**: two generated manifests of 2,000,000 entries each (an upstream listing and a
   published manifest, 1% of entries changed, 0.5% added, 0.5% deleted), diffed by
   ``mirrorkeeper.verify.drift`` (streaming merge) and by the *naive* baseline: load both into dicts,
   then compare (what rclonesync does: ~30 s and ~1 GB for 1.96 M files). Each runs in its own
   process, measured by the launcher in harness.py (wall time, peak RSS). Targets: < 10 s and
   < 300 MB. Both must find the same lag and pending deletes.
2. **Probe**: 500 sampled files checked over HTTP (``serve-http`` over a moto server in its own
   process, HEAD with size and mtime checks, plus the root, trace and missing-path probes) with
   the default concurrency, against the *sequential* baseline (concurrency 1). Target: <= 10 s.

Run: ``.venv/bin/python bench/verify.py`` (about a minute); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness import BenchError, MotoServer, run_in_workdir, run_measured
from run import clean_env

from mirrorkeeper.aws import s3_client
from mirrorkeeper.config import AwsConfig
from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.manifest import ManifestHeader, read_manifest_rows, write_manifest
from mirrorkeeper.state import StateStore
from mirrorkeeper.verify.drift import DriftReport, diff_mirror
from mirrorkeeper.verify.probes import choose_sample, probe_endpoint
from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import TreeSpec, generate_tree
from mirrorkeeper_dev.services import serving

DIFF_SECONDS, DIFF_MIB, PROBE_SECONDS = 10.0, 300.0, 10.0


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the two diff implementations, each run in its own measured process ----------------------------


def diff_streaming(listing: Path, manifest: Path) -> dict[str, int]:
    with open(listing, "rb") as a, open(manifest, "rb") as b:
        report = diff_mirror(read_manifest_rows(a)[1], read_manifest_rows(b)[1], (), DriftReport())
    return {"lag": report.lag, "pending_deletes": report.pending_deletes, "entries": report.listing_entries}


def diff_naive(listing: Path, manifest: Path) -> dict[str, int]:
    def load(path: Path) -> dict[str, list[object]]:
        with gzip.open(path, "rb") as handle:
            next(handle)
            return {row[0]: row for row in map(json.loads, handle)}

    upstream, published = load(listing), load(manifest)
    lag = sum(1 for path, row in upstream.items() if published.get(path, [None])[:5] != row[:5])
    pending = sum(1 for path in published if path not in upstream)
    return {"lag": lag, "pending_deletes": pending, "entries": len(upstream)}


# -- generating the inputs ----------------------------------------------------------------------


def entries(count: int, seed: int, published: bool) -> Iterator[Entry]:
    """``count`` entries in path order: 40 files per directory; the published side differs from
    the listing in 1% of sizes, and each side has 0.5% of entries the other lacks."""
    rng = random.Random(seed)
    for number in range(count):
        directory, index = divmod(number, 41)
        if index == 0:
            yield Entry(f"pool/d{directory:06d}", EntryType.DIR, 0, 1_700_000_000)
            continue
        roll = rng.random()
        if (roll < 0.005 and published) or (0.005 <= roll < 0.01 and not published):
            continue  # added upstream / deleted upstream
        size = 1000 + number
        if published and 0.01 <= roll < 0.02:
            size += 1  # changed upstream since the manifest
        sha = f"{number:064x}" if published else None
        yield Entry(f"pool/d{directory:06d}/package-{number:08d}.rpm", EntryType.FILE, size, 1_700_000_000, None, sha)


def write_inputs(workdir: Path, count: int) -> tuple[Path, Path]:
    paths = []
    for name, published in (("listing", False), ("manifest", True)):
        path = workdir / f"{name}.jsonl.gz"
        with open(path, "wb") as out:
            write_manifest(out, ManifestHeader("bench", "rsync://bench/"), entries(count, 7, published))
        paths.append(path)
    return paths[0], paths[1]


def bench_diff(workdir: Path, count: int, env: dict[str, str]) -> list[str]:
    progress(f"writing two {count:,}-entry manifests")
    listing, manifest = write_inputs(workdir, count)
    script = str(Path(__file__).resolve())
    results = {}
    for kind in ("streaming", "naive"):
        progress(f"diff: {kind}")
        measured = run_measured(
            [sys.executable, script, f"diff-{kind}", str(listing), str(manifest)], env, workdir, timeout=900
        ).check(f"the {kind} diff")
        results[kind] = (measured, json.loads(measured.stdout))
    (fast, found), (slow, expected) = results["streaming"], results["naive"]
    if found != expected:
        raise BenchError(f"the diffs disagree: streaming {found}, naive {expected}")
    lines = [
        f"diff of two {count:,}-entry manifests (lag {found['lag']:,}, pending deletes {found['pending_deletes']:,})",
        f"  {'':<28}{'seconds':>10}{'peak RSS MiB':>15}",
        f"  {'naive (dicts), baseline':<28}{slow.wall:>10.2f}{slow.max_rss_mib:>15.0f}",
        f"  {'mirrorkeeper (streaming)':<28}{fast.wall:>10.2f}{fast.max_rss_mib:>15.0f}",
        f"  {'ratio mirrorkeeper/naive':<28}{fast.wall / slow.wall:>9.2f}x{fast.max_rss_mib / slow.max_rss_mib:>14.2f}x"
        "  (below 1 is better)",
        _verdict(fast.wall < DIFF_SECONDS, f"diff < {DIFF_SECONDS:.0f} s", f"{fast.wall:.2f} s"),
        _verdict(fast.max_rss_mib < DIFF_MIB, f"diff peak RSS < {DIFF_MIB:.0f} MB", f"{fast.max_rss_mib:.0f} MiB"),
    ]
    return lines


# -- probing ------------------------------------------------------------------------------------


def bench_probe(workdir: Path, files: int, env: dict[str, str]) -> list[str]:
    upstream = workdir / "upstream"
    upstream.mkdir()
    generate_tree(upstream, TreeSpec(files=files * 2, total_bytes=files * 2 * 2000, seed=3))
    with MotoServer(workdir, env) as moto, RsyncDaemon(upstream) as daemon:
        env = {**env, "AWS_ENDPOINT_URL": moto.url}
        # This process's own clients (the probe's sample) use the same dummy credentials.
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        aws = AwsConfig(endpoint_url=moto.url, region="us-east-1")
        client = s3_client(aws)
        client.create_bucket(Bucket="bench-verify")
        progress(f"syncing {files * 2} files for the probe benchmark")
        run_measured(
            [sys.executable, "-m", "mirrorkeeper", "sync", "--upstream", daemon.url, "--bucket", "bench-verify"],
            env,
            workdir,
            timeout=600,
        ).check("the sync")
        store = StateStore(client, MirrorLayout.create("bench-verify"))
        with store.manifest_rows(store.manifest_key) as found:
            assert found is not None
            sample = choose_sample(found[1], (), files, 0, 0, 0, 0, random.Random(5))
        timings = {}
        for label, concurrency in (("sequential, baseline", 1), ("mirrorkeeper (concurrency 8)", 8)):
            # A fresh front end each time: serve-http caches, and neither run may inherit a warm cache.
            port = free_port()
            command = [sys.executable, "-m", "mirrorkeeper", "serve-http", "--bucket", "bench-verify"]
            with serving([*command, "--port", str(port)], port, env, "serve-http"):
                progress(f"probe: {label}")
                started = time.perf_counter()
                report = probe_endpoint(
                    "http", f"http://127.0.0.1:{port}/", sample, ".mirrorkeeper/trace", 10, concurrency
                )
                timings[label] = time.perf_counter() - started
            if report.failed:
                raise BenchError(f"{report.failed} probes failed: {report.to_json()['results'][:3]}")
    base, fast = timings["sequential, baseline"], timings["mirrorkeeper (concurrency 8)"]
    return [
        f"probing {len(sample)} sampled files over HTTP (serve-http over moto) + root, trace, missing-path probes",
        f"  {'':<32}{'seconds':>10}{'probes/s':>10}",
        *(f"  {label:<32}{t:>10.2f}{(len(sample) + 3) / t:>10.0f}" for label, t in timings.items()),
        f"  {'speed-up over sequential':<32}{base / fast:>9.2f}x",
        _verdict(fast <= PROBE_SECONDS, f"{len(sample)} probes <= {PROBE_SECONDS:.0f} s", f"{fast:.2f} s"),
    ]


def _verdict(ok: bool, target: str, value: str) -> str:
    return f"  {'PASS' if ok else 'MISS'}  {target:<40} {value}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("diff-streaming", "diff-naive"):
        worker = diff_streaming if args[0] == "diff-streaming" else diff_naive
        print(json.dumps(worker(Path(args[1]), Path(args[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=2_000_000, help="entries per manifest (default 2,000,000)")
    parser.add_argument("--probe-files", type=int, default=500, help="sampled files probed (default 500)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200,000 entries, 100 probes")
    options = parser.parse_args(args)
    count, files = (200_000, 100) if options.quick else (options.entries, options.probe_files)

    def both(workdir: Path) -> list[str]:
        env = clean_env(workdir, "http://127.0.0.1:9")
        return [*bench_diff(workdir, count, env), "", *bench_probe(workdir, files, env)]

    return run_in_workdir("verify", both)


if __name__ == "__main__":
    sys.exit(main())
