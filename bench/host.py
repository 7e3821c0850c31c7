"""Mirror-host benchmark (issue 13, "Performance"), against a baseline measured in the same run.

A host of 20 mirrors of 1,000 files each (``--mirrors``, ``--files``): one rsync daemon serving a
generated tree per module, one moto server in its own process, every mirror synced into one
bucket, and ``serve-http`` and ``serve-ftp`` over it in their own processes.

1. **Fan-out**: ``verify --config host.toml`` (every mirror, on both protocols) against the
   baseline ``verify --config one.toml``, a host of one such mirror (the first, with its state as
   synced). Each is timed ``--repeat`` times, in alternating order, by the launcher in harness.py
   (wall time, process start included); the medians are compared. Target: the host's verify at
   most 3x the one mirror's. Beside it, the floor this machine sets for any fan-out, from the CPU
   seconds each process spent: the moto server, one Python process answering every S3 request
   (its ListObjectsV2 of a mirror's 1,000 keys alone takes about 0.4 s of CPU), often sets it.
2. **No-change sync**: ``sync --config host.toml --mirror m01`` once more, upstream unchanged,
   against the baseline: the same upstream as a stack of its own, synced with today's flags
   (``sync --upstream ... --bucket ...``, no config file) into a bucket of its own, then once
   more. Each one's S3 requests come from its run report (``state/m01/runs/last.json``,
   ``state/runs/last.json``), with the moto server's request log as a cross-check. Targets: at most
   8, and no more than the baseline's.

Every verify must find every mirror ok, and each second sync ``no-change``; anything else stops
the run with ``bench: error:`` and exit 1.

Run: ``.venv/bin/python bench/host.py`` (a few minutes on two cores); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness import BenchError, Measured, MotoServer, compile_mirrorkeeper, cpu_seconds, run_in_workdir, run_measured
from report import ratio, table
from run import clean_env

from mirrorkeeper.aws import s3_client
from mirrorkeeper.config import AwsConfig
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.state import RunReport, StateStore
from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import TreeSpec, generate_tree
from mirrorkeeper_dev.services import serving

BUCKET = "bench-host"
ALONE_BUCKET = "bench-alone"  # the no-change baseline: one upstream, a stack of its own
FAN_OUT_MAX = 3.0  # issue 13: verify over 20 mirrors <= 3x verify over one
NO_CHANGE_REQUESTS_MAX = 8  # issue 13: a no-change sync of a host's mirror stays at most 8 S3 requests
SYNCS_AT_ONCE = 2  # setting up: mirrors synced side by side (each has its own lease); not measured
MIRRORKEEPER = [sys.executable, "-m", "mirrorkeeper"]


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def write_config(path: Path, upstreams: Mapping[str, str]) -> Path:
    tables = "".join(f'\n[mirrors.{name}]\nupstream = "{url}"\n' for name, url in upstreams.items())
    path.write_text(f'[host]\nname = "bench"\nbucket = "{BUCKET}"\n{tables}')
    return path


def first_sync(args: Sequence[str], env: dict[str, str], what: str) -> None:
    """A sync into an empty mirror, which must succeed; not measured."""
    # Not run_measured: it keeps one set of output files per work directory, and these run at once.
    command = [*MIRRORKEEPER, "sync", *args, "--log-level", "WARNING"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 or json.loads(done.stdout)["result"] != "success":
        raise BenchError(f"the first sync of {what} exited {done.returncode}: {done.stderr.strip()[-600:]}")


def first_syncs(config: Path, names: Sequence[str], env: dict[str, str]) -> None:
    """Every mirror's first sync, a few side by side (``sync --all`` takes them one at a time)."""
    with ThreadPoolExecutor(SYNCS_AT_ONCE) as pool:
        list(pool.map(lambda name: first_sync(["--config", str(config), "--mirror", name], env, name), names))


def no_change_sync(
    args: Sequence[str], layout: MirrorLayout, env: dict[str, str], workdir: Path, moto: MotoServer
) -> tuple[Measured, RunReport, int]:
    """One more sync of a mirror, upstream unchanged: the process, its run report (the S3 requests
    it counted) and the requests the moto server logged meanwhile, a cross-check."""
    offset = moto.log_offset()
    measured = run_measured([*MIRRORKEEPER, "sync", *args], env, workdir, timeout=300).check("a no-change sync")
    logged = moto.requests_since(offset)
    summary = json.loads(measured.stdout)
    if summary["result"] != "no-change":
        raise BenchError(f"sync {' '.join(args)} was {summary['result']}, not no-change: upstream moved?")
    report = StateStore(s3_client(AwsConfig(endpoint_url=moto.url, region="us-east-1")), layout).last_run_report()
    if report is None or report.run_id != summary["run_id"] or report.s3_requests != summary["s3_requests"]:
        raise BenchError(f"the run report under {layout.state_prefix} is not that of the run just made")
    return measured, report, logged


def no_change(
    config: Path, name: str, upstream: str, env: dict[str, str], workdir: Path, moto: MotoServer
) -> list[str]:
    """The S3 requests of a no-change sync of the host's mirror ``name`` against the baseline: the
    same upstream as a stack of its own, synced with today's flags (no config file, its own bucket)."""
    alone = ["--upstream", upstream, "--bucket", ALONE_BUCKET]
    progress(f"first sync of the baseline, {name}'s upstream into a bucket of its own")
    first_sync(alone, env, f"{name}'s upstream alone")
    runs = {
        f"{name}'s upstream alone (baseline): sync --upstream ... --bucket {ALONE_BUCKET}": no_change_sync(
            alone, MirrorLayout.create(ALONE_BUCKET), env, workdir, moto
        ),
        # The mirror's path is its name.
        f"{name} of the host: sync --config host.toml --mirror {name}": no_change_sync(
            ["--config", str(config), "--mirror", name], MirrorLayout.create(BUCKET, path=name), env, workdir, moto
        ),
    }
    rows = [
        [
            label,
            f"{measured.wall:.2f}",
            str(report.s3_requests),
            str(logged),
        ]
        for label, (measured, report, logged) in runs.items()
    ]
    baseline, host = (report.s3_requests for _, report, _ in runs.values())
    return [
        "no-change sync of one mirror: the host's against the same upstream synced alone (S3 requests from each "
        "run's report; the moto server's log as a cross-check)",
        *table(["sync", "seconds", "S3 requests", "moto logged"], rows),
        f"  ratio: {ratio(host / baseline)} the baseline's requests",
        verdict(host <= NO_CHANGE_REQUESTS_MAX, f"no-change sync <= {NO_CHANGE_REQUESTS_MAX} S3 requests", str(host)),
        verdict(host <= baseline, "no-change sync <= the baseline's requests", f"{host} vs {baseline}"),
    ]


@dataclass(frozen=True)
class Verified:
    """What one verify over a host cost: its wall time, and the CPU seconds of it and of each server."""

    wall: float
    cpu: dict[str, float]


def fan_out(
    hosts: Mapping[str, tuple[Path, int]],
    urls: Mapping[str, str],
    servers: Mapping[str, int],
    env: dict[str, str],
    workdir: Path,
    repeat: int,
) -> list[str]:
    """Each host's verify (label: config, mirrors) ``repeat`` times, alternating which goes first;
    ``servers`` (name: pid) are the processes whose CPU each run costs besides its own."""
    runs: dict[str, list[Verified]] = {label: [] for label in hosts}
    endpoints = [arg for protocol, url in urls.items() for arg in (f"--{protocol}-url", url)]
    for round_number in range(repeat):
        for label in list(hosts) if round_number % 2 == 0 else list(hosts)[::-1]:
            config, mirrors = hosts[label]
            progress(f"verify round {round_number + 1}/{repeat}: {label}")
            before = {name: cpu_seconds(pid) for name, pid in servers.items()}
            command = [*MIRRORKEEPER, "verify", "--config", str(config), *endpoints, "--json"]
            measured = run_measured(command, env, workdir, timeout=900)
            check_verified(measured, label, mirrors)
            spent = {name: cpu_seconds(pid) - before[name] for name, pid in servers.items()}
            runs[label].append(Verified(measured.wall, {"verify": measured.cpu, **spent}))
    baseline, host = hosts  # the host of one first, then the host of many
    medians = {label: statistics.median(run.wall for run in done) for label, done in runs.items()}
    processes = ["verify", *servers]
    cpu = {
        label: {name: statistics.median(run.cpu[name] for run in done) for name in processes}
        for label, done in runs.items()
    }
    rows = [
        [
            label,
            " ".join(f"{run.wall:.2f}" for run in done),
            f"{medians[label]:.2f}",
            *(f"{cpu[label][name]:.2f}" for name in processes),
        ]
        for label, done in runs.items()
    ]
    fan_out_ratio = medians[host] / medians[baseline]
    # No fan-out ends before the machine has done the work: all CPUs busy, and each process (Python,
    # held to about one CPU by its GIL; moto's alone serves every S3 request) busy throughout.
    busiest = max(processes, key=cpu[host].__getitem__)
    floor = max(sum(cpu[host].values()) / (os.cpu_count() or 1), cpu[host][busiest])
    return [
        f"verify over a host of {hosts[host][1]} mirrors against a host of one such mirror (HTTP and FTP, "
        f"process start included; {repeat} round{'s' if repeat > 1 else ''}, alternating; medians)",
        *table(["verify over", "seconds (each round)", "median", *(f"CPU s {name}" for name in processes)], rows),
        f"  ratio: {ratio(fan_out_ratio)} (one mirror after another would be about {hosts[host][1]}x); the CPU "
        f"columns are each process's user + system seconds during the run, on {os.cpu_count()} CPUs",
        f"  floor on this machine: {host} took {sum(cpu[host].values()):.1f} CPU s in all, {busiest} alone "
        f"{cpu[host][busiest]:.1f} s; no fan-out ends before {floor:.1f} s, {ratio(floor / medians[baseline])} "
        f"{baseline}",
        verdict(fan_out_ratio <= FAN_OUT_MAX, f"{host} <= {FAN_OUT_MAX:g}x {baseline}", ratio(fan_out_ratio)),
    ]


def check_verified(measured: Measured, label: str, mirrors: int) -> None:
    """A verify the benchmark can time: it checked every mirror of its host and found each ok."""
    try:
        document = json.loads(measured.stdout)
    except ValueError:
        raise BenchError(f"verify over {label} exited {measured.returncode}: {measured.stderr[-800:]}") from None
    states = document.get("mirrors", [])
    not_ok = {
        s["mirror"]: s["health"].get("findings", s["health"]) for s in states if s["health"].get("overall") != "ok"
    }
    if measured.returncode != 0 or len(states) != mirrors or not_ok:
        raise BenchError(
            f"verify over {label} exited {measured.returncode}, {len(states)} mirrors checked, not ok: {not_ok}"
        )


def verdict(passed: bool, target: str, value: str) -> str:
    return f"  {'PASS' if passed else 'MISS'}  {target:<44} {value}"


def local_aws(stack: ExitStack, workdir: Path, buckets: Sequence[str]) -> tuple[MotoServer, dict[str, str]]:
    """A moto server for the rest of ``stack`` with ``buckets`` created, and the environment of the
    processes measured against it (this process's own clients get its dummy credentials too)."""
    moto = stack.enter_context(MotoServer(workdir, clean_env(workdir, "http://127.0.0.1:9")))
    env = clean_env(workdir, moto.url)
    # This process's own client (the buckets, the run reports) uses the same dummy credentials.
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    client = s3_client(AwsConfig(endpoint_url=moto.url, region="us-east-1"))
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    return moto, env


def bench_host(workdir: Path, mirrors: int, files: int, repeat: int) -> list[str]:
    names = [f"m{number:02d}" for number in range(1, mirrors + 1)]
    progress(f"generating {mirrors} trees of {files} files")
    for number, name in enumerate(names):
        generate_tree(workdir / "upstream" / name, TreeSpec(files=files, total_bytes=files * 2000, seed=100 + number))
    compile_mirrorkeeper()
    with ExitStack() as stack:
        moto, env = local_aws(stack, workdir, (BUCKET, ALONE_BUCKET))
        upstream = workdir / "upstream"
        more = {name: upstream / name for name in names[1:]}
        daemon = stack.enter_context(RsyncDaemon(upstream / names[0], module=names[0], more=more))
        upstreams = {name: daemon.url_of(name) for name in names}
        host = write_config(workdir / "host.toml", upstreams)
        one = write_config(workdir / "one.toml", {names[0]: upstreams[names[0]]})
        progress(f"first syncs of {mirrors} mirrors, {SYNCS_AT_ONCE} at once")
        first_syncs(host, names, env)
        lines = no_change(host, names[0], upstreams[names[0]], env, workdir, moto)
        urls, servers = {}, {"moto": moto.pid}
        for protocol in ("http", "ftp"):
            port = free_port()
            serve = [*MIRRORKEEPER, f"serve-{protocol}", "--bucket", BUCKET, "--port", str(port)]
            servers[f"serve-{protocol}"] = stack.enter_context(serving(serve, port, env, f"serve-{protocol}")).pid
            urls[protocol] = f"{protocol}://127.0.0.1:{port}/"
        hosts = {"one mirror (baseline)": (one, 1), f"{mirrors} mirrors": (host, mirrors)}
        return [*fan_out(hosts, urls, servers, env, workdir, repeat), "", *lines]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirrors", type=int, default=20, help="mirrors of the host (default 20)")
    parser.add_argument("--files", type=int, default=1000, help="files per mirror (default 1,000)")
    parser.add_argument("--repeat", type=int, default=3, help="verify rounds of each (default 3; medians count)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 mirrors of 200 files, one round")
    options = parser.parse_args(argv)
    mirrors, files, repeat = (4, 200, 1) if options.quick else (options.mirrors, options.files, options.repeat)
    return run_in_workdir("host", lambda workdir: bench_host(workdir, mirrors, files, repeat))


if __name__ == "__main__":
    sys.exit(main())
