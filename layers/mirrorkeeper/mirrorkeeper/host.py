"""A mirror host: many mirrors under one name, each under its path (docs/architecture.md, "A host").

What every part needs to know of each mirror, read from the config file and the bucket: its
schedule (the EventBridge Scheduler expression the stack gives it, and when it runs next) and its
state as people and tools see it: last successful and last sync, result, size, health, in
tunasync's web-status vocabulary (``success``, ``failed``, ``syncing``, ``paused``, ``disabled``)
so existing mirror-site front ends can read ``/.mirrorkeeper/mirrors.json``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mirrorkeeper.config import load_layout, read_config, resolve
from mirrorkeeper.display import human_size
from mirrorkeeper.errors import ConfigError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.state import StateStore, SyncResult

if TYPE_CHECKING:
    from mirrorkeeper.aws import S3Client

# Results after which the mirror serves what upstream had (perhaps with some paths skipped or
# deletions held): a success in tunasync's terms.
PUBLISHED = {
    SyncResult.SUCCESS,
    SyncResult.NO_CHANGE,
    SyncResult.UPSTREAM_UNCHANGED,
    SyncResult.PARTIAL,
    SyncResult.DELETIONS_HELD,
    SyncResult.UPSTREAM_BUSY,
}


@dataclass(frozen=True)
class Schedule:
    """When a mirror syncs: every ``interval`` seconds at ``minute`` past the hour (hourly intervals
    that divide a day), or every ``interval`` minutes starting at ``minute`` (intervals that divide an
    hour). The same rule as the cron expression the stack gives its EventBridge schedule."""

    interval: float
    minute: int

    def __post_init__(self) -> None:
        seconds = int(self.interval)
        hourly = seconds % 3600 == 0 and 86400 % seconds == 0
        minutely = seconds < 3600 and seconds % 60 == 0 and 3600 % seconds == 0
        if seconds != self.interval or not (hourly or minutely):
            raise ConfigError(
                f"a sync interval of {self.interval:g} s cannot be scheduled: use minutes that divide an hour "
                "(15m, 30m) or hours that divide a day (1h, 2h, 6h, 1d)"
            )
        if minutely and self.minute >= seconds // 60:
            raise ConfigError(f"minute {self.minute} is not within an interval of {seconds // 60} minutes")

    @property
    def expression(self) -> str:
        """The EventBridge Scheduler cron expression (UTC)."""
        seconds = int(self.interval)
        if seconds < 3600:
            return f"cron({self.minute}/{seconds // 60} * * * ? *)"
        hours = seconds // 3600
        return f"cron({self.minute} {'0' if hours == 24 else f'*/{hours}'} * * ? *)"

    def next_after(self, now: float) -> float:
        """The first run after ``now`` (intervals that divide a day are aligned to midnight UTC)."""
        step, first = int(self.interval), self.minute * 60
        return float(first + ((int(now) - first) // step + 1) * step)


@dataclass
class MirrorSummary:
    """One mirror's state as the host's front page, ``mirrors.json`` and ``mirrorkeeper mirrors`` show it."""

    name: str
    path: str
    upstream: str
    enabled: bool = True
    paused: bool = False
    syncing: bool = False
    last_update: float | None = None  # the end of the last sync that published (its trace)
    last_ended: float | None = None  # the end of the last sync, whatever its result
    result: str = ""
    exit_code: int | None = None
    error: str = ""
    size: int | None = None
    files: int | None = None
    next_schedule: float | None = None
    health: dict[str, str] = field(default_factory=dict)
    checked_at: float = 0.0  # its last verify, and that check's figures (for the host's metrics)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """tunasync's status: success, failed, syncing, paused or disabled."""
        if not self.enabled:
            return "disabled"
        if self.paused:
            return "paused"
        if self.syncing:
            return "syncing"
        return "success" if self.result and SyncResult(self.result) in PUBLISHED else "failed"

    def to_json(self) -> dict[str, Any]:
        """tunasync's web-status fields (``next_schedule_ts`` too), then ours."""
        return {
            "name": self.name,
            "is_master": True,
            "status": self.status,
            "last_update": _tunasync_time(self.last_update),
            "last_update_ts": int(self.last_update or 0),
            "last_ended": _tunasync_time(self.last_ended),
            "last_ended_ts": int(self.last_ended or 0),
            "upstream": self.upstream,
            "size": human_size(self.size, compact=True) if self.size is not None else "unknown",
            "next_schedule": _tunasync_time(self.next_schedule),
            "next_schedule_ts": int(self.next_schedule or 0),
            "path": self.path,
            "result": self.result,
            "exit_code": self.exit_code,
            "error": self.error,
            "size_bytes": self.size,
            "files": self.files,
            "health": self.health,
        }


def _tunasync_time(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(epoch or 0))


@dataclass(frozen=True)
class MirrorEntry:
    """What the config says of one mirror of the host."""

    name: str
    layout: MirrorLayout
    upstream: str
    trace_path: str
    schedule: Schedule | None
    enabled: bool
    paused: bool


def mirror_entries(
    command: str, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> list[tuple[MirrorEntry, dict[str, Any]]]:
    """Every mirror of the host's config file, in its order, with its settings ([] for a host of one)."""
    environ = os.environ if environ is None else environ
    file = read_config(command, flags, environ)
    resolved = (resolve(command, flags, environ, mirror=name, file=file) for name in file.mirrors)
    return [(entry_of(values), values) for values in resolved]


def entry_of(values: Mapping[str, Any]) -> MirrorEntry:
    schedule = (
        Schedule(values["sync_interval"], values["minute"]) if "minute" in values and values["sync_interval"] else None
    )
    return MirrorEntry(
        values.get("mirror") or "",
        load_layout(values),
        values["upstream"],
        values["trace_path"],
        schedule,
        values["enabled"],
        values["paused"],
    )


def summarise(client: S3Client, mirror: MirrorEntry, now: float) -> MirrorSummary:
    """The mirror's state from its objects in the bucket: run report, lease, trace, manifest, health."""
    state = StateStore(client, mirror.layout)
    summary = MirrorSummary(mirror.name, mirror.layout.path, mirror.upstream, mirror.enabled, mirror.paused)
    report = state.last_run_report()
    if report is not None:
        summary.last_ended, summary.result, summary.exit_code = report.finished, report.result.value, report.exit_code
        summary.error = report.error
    lease = state.read_lease()
    summary.syncing = lease is not None and not lease.expired
    summary.last_update = state.published_at(mirror.trace_path)
    meta = state.manifest_meta()
    if meta is not None and meta.totals is not None:
        summary.files, summary.size, _ = meta.totals
    health, _ = state.read_health()
    summary.health, summary.checked_at, summary.figures = dict(health.levels), health.checked_at, health.figures
    if mirror.schedule is not None and mirror.enabled and not mirror.paused:
        summary.next_schedule = mirror.schedule.next_after(now)
    return summary


def summarise_all(client: S3Client, mirrors: list[MirrorEntry], now: float) -> list[MirrorSummary]:
    """Every mirror's summary, read concurrently (five small reads each)."""
    with ThreadPoolExecutor(min(16, max(len(mirrors), 1)), thread_name_prefix="summary") as pool:
        return list(pool.map(lambda m: summarise(client, m, now), mirrors))
