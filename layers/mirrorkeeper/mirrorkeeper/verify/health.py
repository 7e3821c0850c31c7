"""The health model: from what diff-manifests, probe-endpoints and the sync task report, a level
per component and overall, by the rules below (docs/health.md explains them to operators).

Components are the probed protocols (``http``, ``ftp``, ``rsync``) and ``mirror`` (the content:
sync outcome, drift, completeness). ``overall`` is the worst of them.

    protocol  down      unreachable (connection refused, DNS, timeout); rsync handshake refused;
                        freshness beyond DOWN_AFTER x the sync interval (the served trace's age,
                        or, for the trace a later run vouched for, the age of that run: it found
                        upstream's own trace unchanged)
              degraded  freshness beyond DEGRADED_AFTER x the sync interval; trace unreadable;
                        a missing path not answered 404 / 550; any sampled file, size, mtime,
                        hash or root-listing probe failed (a copy older than the last sync only
                        after the cache grace, or at once when the sync's invalidation of it had
                        completed before the probe); the probe step itself failed
    mirror    degraded  drift (objects missing, extra or of the wrong size); the last sync failed
                        (non-zero exit other than "lock held", or the task never started); nothing
                        published yet; the drift check itself failed

A level change sends one message; a level that stays bad sends a reminder every
``reminder_interval``; the return to ok sends one "resolved" message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mirrorkeeper.display import human_age
from mirrorkeeper.errors import ExitCode
from mirrorkeeper.state import EdgeRecord, Level, SyncOutcome
from mirrorkeeper.verify.drift import DriftReport
from mirrorkeeper.verify.probes import EndpointReport, Outcome, ProbeKind

DEGRADED_AFTER = 2.0
DOWN_AFTER = 6.0
HISTORY_SECONDS = 14 * 86400
MIRROR = "mirror"
OVERALL = "overall"


@dataclass(frozen=True)
class Finding:
    component: str
    level: Level
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"component": self.component, "level": self.level.label, "reason": self.reason}


@dataclass(frozen=True)
class Vouched:
    """A trace epoch a later run vouched for: it found upstream's trace as it was when the trace of
    ``epoch`` was published, at ``confirmed_at``, so a served trace of that epoch is current as of then."""

    epoch: int
    confirmed_at: float


def current_as_of(report: EndpointReport, vouched: Vouched | None) -> float | None:
    """When what the endpoint serves is known to have been current: its trace's time, or later when a
    run vouched for that trace; None when the trace could not be read."""
    if report.trace_epoch is None:
        return None
    if vouched is not None and report.trace_epoch == vouched.epoch:
        return max(float(report.trace_epoch), vouched.confirmed_at)
    return float(report.trace_epoch)


@dataclass(frozen=True)
class StepFailure:
    """A verification step that failed (the workflow's Catch, or the local chain's except)."""

    error: str
    cause: str


def sync_from_exit(exit_code: int | None, reason: str) -> tuple[bool, str]:
    """Whether a sync task's end is healthy, and the sentence an operator reads."""
    if exit_code == ExitCode.OK:
        return True, "synced"
    if exit_code == ExitCode.LOCKED:
        return True, "another sync held the lock; this run did nothing"
    if exit_code == ExitCode.DELETION_GUARD:
        return False, (
            "the deletion guard held the last sync's deletions (everything else was published): upstream shrank "
            f"more than allowed{': ' + reason if reason else ''}; check upstream, then run the sync once with "
            "--force-delete"
        )
    if exit_code == ExitCode.PARTIAL:
        return False, (
            f"the last sync skipped paths it could not fetch or store{': ' + reason if reason else ''}; the next run "
            "retries them"
        )
    if exit_code == ExitCode.UPSTREAM_BUSY:
        return True, "upstream was mid-update; the sync published nothing beyond data and waits for it"
    if exit_code == ExitCode.USAGE:
        return False, "the sync task is misconfigured (exit 2); read its log, fix the task definition's settings"
    if exit_code == ExitCode.INTERRUPTED:
        return False, (
            "the sync was stopped before it finished (SIGTERM: the task was stopped, e.g. by a deployment or "
            "StopTask); the next run completes it"
        )
    if exit_code is None:
        return False, f"the sync task never ran its command: {reason or 'no exit code'}"
    return False, f"the sync failed (exit {exit_code}){': ' + reason if reason else ''}; read the task's log"


@dataclass
class Assessment:
    checked_at: float
    levels: dict[str, Level]
    findings: list[Finding] = field(default_factory=list)
    current: dict[str, float] = field(default_factory=dict)  # per protocol: what it serves was current as of

    def freshness(self, protocol: str) -> float | None:
        """Seconds since what ``protocol`` serves was known current; None when its trace was unreadable."""
        as_of = self.current.get(protocol)
        return max(self.checked_at - as_of, 0.0) if as_of is not None else None

    @property
    def overall(self) -> Level:
        return max(self.levels.values(), default=Level.OK)

    def reasons(self, component: str) -> list[str]:
        return [f.reason for f in self.findings if f.component == component]


def assess_endpoint(
    report: EndpointReport,
    now: float,
    sync_interval: float,
    cache_grace: float,
    edge: EdgeRecord | None = None,
    vouched: Vouched | None = None,
) -> list[Finding]:
    """``edge``: what the last sync that replaced anything invalidated; a stale copy that one of its
    completed invalidations covered is the edge ignoring it, never a cache not yet expired.
    ``vouched``: the trace a later run found still current upstream."""
    name = report.protocol
    if not report.reachable:
        first = report.results[0] if report.results else None
        return [Finding(name, Level.DOWN, f"unreachable at {report.url}: {first.detail if first else 'no answer'}")]
    findings: list[Finding] = []
    if any(r.kind is ProbeKind.HANDSHAKE for r in report.results):  # rsync where no client could run
        failed = [r for r in report.results if not r.ok]
        return [Finding(name, Level.DOWN, f"the rsync module is not served: {r.detail}") for r in failed]
    if report.trace_epoch is None:
        trace = next((r for r in report.results if r.kind is ProbeKind.TRACE), None)
        findings.append(
            Finding(name, Level.DEGRADED, f"the trace file is unreadable ({trace.detail if trace else 'not probed'})")
        )
    else:
        current = current_as_of(report, vouched)
        age = max(now - (current if current is not None else report.trace_epoch), 0.0)
        for factor, level in ((DOWN_AFTER, Level.DOWN), (DEGRADED_AFTER, Level.DEGRADED)):
            if age > factor * sync_interval:
                limit = human_age(factor * sync_interval)
                findings.append(
                    Finding(
                        name, level, f"stale: last known current {human_age(age)} ago ({level.label} after {limit})"
                    )
                )
                break
    if report.missing_check is False:
        missing = next(r for r in report.results if r.kind is ProbeKind.MISSING)
        findings.append(Finding(name, Level.DEGRADED, f"wrong status for a missing file: {missing.detail}"))
    kept = [
        r
        for r in report.results
        if r.outcome is Outcome.STALE and edge is not None and edge.invalidated(r.path, report.probed_at)
    ]
    if kept:
        findings.append(
            Finding(
                name,
                Level.DEGRADED,
                f"{len(kept)} files served older than the last sync although its invalidation of them had "
                f"completed before the probe (first: {kept[0].path}: {kept[0].detail}); the edge did not drop them",
            )
        )
    stale = sum(r.outcome is Outcome.STALE for r in report.results) - len(kept)
    synced_ago = now - report.trace_epoch if report.trace_epoch is not None else None
    forgiven = bool(stale) and synced_ago is not None and synced_ago <= cache_grace
    if forgiven and synced_ago is not None:
        findings.append(
            Finding(
                name,
                Level.OK,
                f"{stale} files served from a cache older than the last sync, {human_age(synced_ago)} ago "
                f"(allowed for {human_age(cache_grace)})",
            )
        )
    failed = [
        r
        for r in report.results
        if r.kind in (ProbeKind.ROOT, ProbeKind.FILE, ProbeKind.DOWNLOAD)
        and not r.ok
        and not (forgiven and r.outcome is Outcome.STALE)
        and r not in kept
    ]
    if failed:
        first = failed[0]
        findings.append(
            Finding(
                name,
                Level.DEGRADED,
                f"{len(failed)} of {len(report.results)} probes failed; first: {first.kind.value} "
                f"{first.path or '/'}: {first.outcome.value}: {first.detail}",
            )
        )
    return findings


def assess_mirror(drift: DriftReport | StepFailure, sync: SyncOutcome | None) -> list[Finding]:
    findings: list[Finding] = []
    if isinstance(drift, StepFailure):
        findings.append(Finding(MIRROR, Level.DEGRADED, f"the drift check failed: {drift.error}: {drift.cause}"))
    elif not drift.manifest_generated:
        findings.append(Finding(MIRROR, Level.DEGRADED, "nothing published yet: no sync has completed"))
    elif drift.drift and drift.sync_in_progress:
        findings.append(
            Finding(MIRROR, Level.OK, f"{drift.drift} objects differ from the manifest while a sync is running")
        )
    elif drift.drift:
        findings.append(
            Finding(
                MIRROR,
                Level.DEGRADED,
                f"{drift.drift} objects differ from the manifest (missing {drift.missing}, extra {drift.extra}, "
                f"wrong size {drift.size_mismatch}); the next sync uploads missing and damaged ones again "
                "and deletes extras",
            )
        )
    if sync is not None and not sync.ok:
        findings.append(Finding(MIRROR, Level.DEGRADED, sync.reason))
    return findings


def assess(
    now: float,
    sync_interval: float,
    protocols: list[str],
    drift: DriftReport | StepFailure,
    probes: list[EndpointReport] | StepFailure,
    sync: SyncOutcome | None,
    cache_grace: float = 3600.0,
    edge: EdgeRecord | None = None,
    vouched: Vouched | None = None,
) -> Assessment:
    findings = assess_mirror(drift, sync)
    current: dict[str, float] = {}
    if isinstance(probes, StepFailure):
        findings += [
            Finding(p, Level.DEGRADED, f"the probes did not run: {probes.error}: {probes.cause}") for p in protocols
        ]
    else:
        for report in probes:
            findings += assess_endpoint(report, now, sync_interval, cache_grace, edge, vouched)
            as_of = current_as_of(report, vouched)
            if as_of is not None:
                current[report.protocol] = as_of
    levels = {component: Level.OK for component in [*protocols, MIRROR]}
    for finding in findings:
        levels[finding.component] = max(levels.get(finding.component, Level.OK), finding.level)
    return Assessment(now, levels, findings, current)
