"""Health kept between verify runs (``state/health.json``): the levels last seen, when people were
last told, the last sync's outcome, the last checks (for the status page) and 14 days of history.

It is what makes alerts edge-triggered: a message when a level changes, a reminder while one stays
bad, one "resolved" message when all is well again.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from mirrorkeeper.drift import DriftReport
from mirrorkeeper.health import HISTORY_SECONDS, MIRROR, OVERALL, Assessment, Level, StepFailure, SyncOutcome
from mirrorkeeper.probes import EndpointReport

STATE_VERSION = 1


class Notice(StrEnum):
    CHANGED = "changed"
    REMINDER = "reminder"
    RESOLVED = "resolved"


@dataclass
class ProtocolStatus:
    """The last probe of one protocol, as the status page shows it."""

    url: str
    level: str
    trace_epoch: int | None
    passed: int
    failed: int
    missing_check: bool | None
    latency_ms: float | None
    reasons: list[str]


@dataclass
class HistoryPoint:
    t: float
    overall: str
    levels: dict[str, str]
    freshness: dict[str, float | None]
    completion: float | None


@dataclass
class HealthState:
    levels: dict[str, str] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)
    last_notified: float = 0.0
    last_sync: SyncOutcome | None = None
    last_report_run_id: str = ""
    checked_at: float = 0.0
    protocols: dict[str, ProtocolStatus] = field(default_factory=dict)
    mirror_reasons: list[str] = field(default_factory=list)
    completion: float | None = None
    drift: int | None = None
    lag: int | None = None
    history: list[HistoryPoint] = field(default_factory=list)

    def level(self, component: str) -> Level:
        return Level.parse(self.levels.get(component, "ok"))

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["version"] = STATE_VERSION
        doc["last_sync"] = self.last_sync.to_json() if self.last_sync else None
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> HealthState:
        """The stored state; an absent, older or damaged document starts afresh (history is a
        convenience, alerts must keep working)."""
        if not doc or doc.get("version") != STATE_VERSION:
            return cls()
        try:
            return cls(
                levels=dict(doc.get("levels", {})),
                since=dict(doc.get("since", {})),
                last_notified=float(doc.get("last_notified", 0.0)),
                last_sync=SyncOutcome.from_json(doc["last_sync"]) if doc.get("last_sync") else None,
                last_report_run_id=str(doc.get("last_report_run_id", "")),
                checked_at=float(doc.get("checked_at", 0.0)),
                protocols={k: ProtocolStatus(**v) for k, v in doc.get("protocols", {}).items()},
                mirror_reasons=list(doc.get("mirror_reasons", [])),
                completion=doc.get("completion"),
                drift=doc.get("drift"),
                lag=doc.get("lag"),
                history=[HistoryPoint(**p) for p in doc.get("history", [])],
            )
        except (TypeError, ValueError, KeyError):
            return cls()


def changed_components(previous: HealthState, assessment: Assessment) -> dict[str, tuple[Level, Level]]:
    """Components whose level moved, ``{name: (before, now)}``; an unknown component was ok."""
    moved = {}
    for component, level in [*assessment.levels.items(), (OVERALL, assessment.overall)]:
        before = previous.level(component)
        if before is not level:
            moved[component] = (before, level)
    return moved


def decide_notice(previous: HealthState, assessment: Assessment, now: float, reminder_interval: float) -> Notice | None:
    moved = changed_components(previous, assessment)
    if moved:
        return Notice.RESOLVED if assessment.overall is Level.OK else Notice.CHANGED
    if assessment.overall is not Level.OK and now - previous.last_notified >= reminder_interval:
        return Notice.REMINDER
    return None


def next_state(
    previous: HealthState,
    assessment: Assessment,
    drift: DriftReport | StepFailure,
    probes: list[EndpointReport] | StepFailure,
    sync: SyncOutcome | None,
    notified: bool,
) -> HealthState:
    now = assessment.checked_at
    levels = {c: lv.label for c, lv in assessment.levels.items()} | {OVERALL: assessment.overall.label}
    since = {c: previous.since.get(c, now) if previous.levels.get(c) == label else now for c, label in levels.items()}
    protocols: dict[str, ProtocolStatus] = {}
    if not isinstance(probes, StepFailure):
        for report in probes:
            latencies = [r.latency_ms for r in report.results]
            protocols[report.protocol] = ProtocolStatus(
                url=report.url,
                level=levels.get(report.protocol, "ok"),
                trace_epoch=report.trace_epoch,
                passed=report.passed,
                failed=report.failed,
                missing_check=report.missing_check,
                latency_ms=round(statistics.median(latencies), 2) if latencies else None,
                reasons=assessment.reasons(report.protocol),
            )
    point = HistoryPoint(
        t=now,
        overall=assessment.overall.label,
        levels={c: lv.label for c, lv in assessment.levels.items()},
        freshness={p: (now - s.trace_epoch if s.trace_epoch is not None else None) for p, s in protocols.items()},
        completion=drift.completion_pct if not isinstance(drift, StepFailure) else None,
    )
    history = [p for p in previous.history if p.t > now - HISTORY_SECONDS] + [point]
    measured = drift if not isinstance(drift, StepFailure) else None
    return HealthState(
        levels=levels,
        since=since,
        last_notified=now if notified else previous.last_notified,
        last_sync=sync,
        last_report_run_id=previous.last_report_run_id,
        checked_at=now,
        protocols=protocols,
        mirror_reasons=assessment.reasons(MIRROR),
        completion=measured.completion_pct if measured else None,
        drift=measured.drift if measured else None,
        lag=measured.lag if measured else None,
        history=history,
    )
