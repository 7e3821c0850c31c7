"""The benchmark's printed table, ratio sentences and target lines (and the same as JSON)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# The targets of issue 2, "Benchmark".
NO_CHANGE_VS_FLOOR_MAX = 1.5  # no-change: mirrorkeeper <= 1.5x the rsync floor
NO_CHANGE_VS_NAIVE_MIN = 3.0  # no-change: mirrorkeeper >= 3x faster than the naive pipeline
FIRST_VS_NAIVE_MAX = 1.0  # first sync: mirrorkeeper <= 1.0x the naive pipeline
BIG_RSS_MAX = 2.0  # 10x the files: peak RSS <= 2x


@dataclass(frozen=True)
class Outcome:
    """One tool's result for one scenario (for repeated scenarios: the median run, the peak RSS)."""

    wall: float
    rss_mib: float
    cpu: float | None = None  # (c) user + system CPU seconds (with its rsync children)
    requests: int | None = None  # S3 requests: (b) from the moto log, (c) from mirrorkeeper's summary
    logged_requests: int | None = None  # (c) as the moto server logged them, a cross-check
    inner: float | None = None  # (c) the duration mirrorkeeper reports (after interpreter start and imports)
    uploads: int | None = None
    parts: tuple[float, float] | None = None  # (b) rsync seconds, aws s3 sync seconds
    runs: int = 1


@dataclass(frozen=True)
class Row:
    floor: Outcome
    naive: Outcome
    keeper: Outcome
    # no-change only: the floor with the socket option mirrorkeeper's own rsync sessions use
    floor_nodelay: Outcome | None = None


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain-text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def versus_naive(keeper: float, naive: float) -> str:
    if keeper <= naive:
        return f"{ratio(naive / keeper)} faster than naive"
    return f"{ratio(keeper / naive)} slower than naive"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _rsync_version() -> str:
    try:
        first = subprocess.run(["rsync", "--version"], capture_output=True, text=True, check=False, timeout=10)
        return " ".join(first.stdout.split()[:3])
    except (OSError, subprocess.SubprocessError):
        return "rsync ?"


def print_report(
    files: int,
    total_bytes: int,
    rows: dict[str, Row],
    startup: float,
    big_files: int,
    big_bytes: int,
    big: dict[str, Outcome],
    repeat: int,
    elapsed: float,
    loads: tuple[float, float],
) -> dict[str, Any]:
    out: list[str] = []
    say = out.append
    say("")
    say(
        f"mirrorkeeper benchmark: {files} files, {total_bytes / 1e6:.1f} MB (depth 3, fanout 8), served by a local "
        f"rsync daemon, synced into a local moto server"
    )
    say(
        f"Python {platform.python_version()}, {_rsync_version()}, {os.cpu_count()} CPUs; "
        f"no-change: median of {repeat} runs each; wall seconds include process start"
    )
    say("")
    headers = [
        "scenario",
        "(a) rsync",
        "(b) naive",
        "(b) = rsync + aws",
        "(c) mirrorkeeper",
        "CPU (c)",
        "(c)/(a)",
        "(b)/(c)",
        "S3 req (b)",
        "S3 req (c)",
        "RSS (b) MiB",
        "RSS (c) MiB",
        "uploads (c)",
    ]
    cells = []
    for name, row in rows.items():
        a, b, c = row.floor, row.naive, row.keeper
        parts = f"{b.parts[0]:.2f} + {b.parts[1]:.2f}" if b.parts else "-"
        cells.append(
            [
                name,
                f"{a.wall:.2f} s",
                f"{b.wall:.2f} s",
                parts,
                f"{c.wall:.2f} s",
                "-" if c.cpu is None else f"{c.cpu:.2f} s",
                ratio(c.wall / a.wall),
                ratio(b.wall / c.wall),
                _count(b.requests),
                _count(c.requests),
                f"{b.rss_mib:.0f}",
                f"{c.rss_mib:.0f}",
                _count(c.uploads),
            ]
        )
    out.extend(table(headers, cells))
    say("")
    for name, row in rows.items():
        floor, naive, keeper = row.floor.wall, row.naive.wall, row.keeper.wall
        say(f"{name}: mirrorkeeper {keeper:.2f} s = {ratio(keeper / floor)} rsync floor, {versus_naive(keeper, naive)}")
    say("")
    inner = ", ".join(f"{name} {row.keeper.inner:.2f} s" for name, row in rows.items() if row.keeper.inner is not None)
    say(
        f"mirrorkeeper's wall time = interpreter start and the sync command's imports ({startup:.2f} s, while rsync "
        "already lists upstream)"
    )
    say(f"  + the run's own reported duration ({inner}).")
    logged = " / ".join(_count(row.keeper.logged_requests) for row in rows.values())
    say(
        f"S3 requests: (c) from mirrorkeeper's JSON summary (the moto server logged {logged} for the same runs); "
        "(b) counted in the moto server's request log."
    )
    say("CPU (c): user + system seconds of mirrorkeeper and its rsync children; the rest of its wall time it waited.")
    say("RSS: peak resident set of the process and the children it waited for (rsync); (b) the larger of its two.")

    targets: list[tuple[bool | None, str, str]] = []
    no_change, first = rows["no-change"], rows["first sync"]
    floor_ratio = no_change.keeper.wall / no_change.floor.wall
    naive_speedup = no_change.naive.wall / no_change.keeper.wall
    first_ratio = first.keeper.wall / first.naive.wall
    targets.append(
        (
            floor_ratio <= NO_CHANGE_VS_FLOOR_MAX,
            f"no-change <= {NO_CHANGE_VS_FLOOR_MAX}x rsync floor",
            ratio(floor_ratio),
        )
    )
    targets.append(
        (
            naive_speedup >= NO_CHANGE_VS_NAIVE_MIN,
            f"no-change >= {NO_CHANGE_VS_NAIVE_MIN:g}x faster than naive",
            f"{ratio(naive_speedup)} faster",
        )
    )
    targets.append(
        (first_ratio <= FIRST_VS_NAIVE_MAX, f"first sync <= {FIRST_VS_NAIVE_MAX}x naive", ratio(first_ratio))
    )

    memory: dict[str, Any] = {}
    rss_target = f"{big_files or '10x'}-file peak RSS <= {BIG_RSS_MAX:g}x the {files}-file one"
    if big:
        say("")
        mem_rows = []
        for name in ("first sync", "no-change"):
            small_rss, big_rss = rows[name].keeper.rss_mib, big[name].rss_mib
            mem_rows.append([name, f"{small_rss:.0f}", f"{big_rss:.0f}", ratio(big_rss / small_rss)])
        out.extend(table(["mirrorkeeper peak RSS (MiB)", f"{files} files", f"{big_files} files", "ratio"], mem_rows))
        small_peak = max(rows[n].keeper.rss_mib for n in ("first sync", "no-change"))
        big_peak = max(o.rss_mib for o in big.values())
        say(
            f"{big_files}-file tree ({big_bytes / 1e6:.1f} MB): first sync {big['first sync'].wall:.2f} s "
            f"({_count(big['first sync'].requests)} S3 requests), no-change {big['no-change'].wall:.2f} s "
            f"({_count(big['no-change'].requests)} S3 requests)"
        )
        targets.append(
            (big_peak / small_peak <= BIG_RSS_MAX, rss_target, f"{ratio(big_peak / small_peak)} (peak of both runs)")
        )
        memory = {
            "files": big_files,
            "bytes": big_bytes,
            "runs": {k: asdict(v) for k, v in big.items()},
            "peak_ratio": big_peak / small_peak,
        }
    else:
        targets.append((None, rss_target, "memory run skipped (--skip-big)"))

    say("")
    say("targets (issue 2):")
    width = max(len(t[1]) for t in targets)
    for passed, text, value in targets:
        verdict = "SKIP" if passed is None else ("PASS" if passed else "MISS")
        say(f"  {verdict}  {text.ljust(width)}  {value}")
    tuned = rows["no-change"].floor_nodelay
    if tuned is not None:
        keeper = rows["no-change"].keeper.wall
        say(
            f"  info  the floor run as mirrorkeeper runs rsync (--sockopts=TCP_NODELAY): no-change {tuned.wall:.2f} s; "
            f"mirrorkeeper is {ratio(keeper / tuned.wall)} that"
        )
    say(
        f"(benchmark took {elapsed:.0f} s; 1-minute load average {loads[0]:.2f} at the start, {loads[1]:.2f} at the "
        "end: anything else running on this machine inflates the timings)"
    )
    print("\n".join(out), flush=True)
    return {
        "files": files,
        "bytes": total_bytes,
        "startup_seconds": startup,
        "load_average": list(loads),
        "scenarios": {name: {k: asdict(v) for k, v in asdict_row(row).items()} for name, row in rows.items()},
        "memory": memory,
        "targets": [{"target": t, "value": v, "passed": p} for p, t, v in targets],
    }


def asdict_row(row: Row) -> dict[str, Outcome]:
    named = {"rsync": row.floor, "naive": row.naive, "mirrorkeeper": row.keeper}
    return named | ({"rsync_tcp_nodelay": row.floor_nodelay} if row.floor_nodelay else {})
