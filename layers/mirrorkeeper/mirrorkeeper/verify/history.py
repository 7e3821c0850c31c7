"""How health kept between verify runs (:class:`~mirrorkeeper.state.HealthState`, ``state/health.json``)
moves on with each check: the levels last seen, when people were last told, 14 days of history.

It is what makes alerts edge-triggered: a message when a level changes, a reminder while one stays
bad, one "resolved" message when all is well again.
"""

from __future__ import annotations

import statistics
from enum import StrEnum

from mirrorkeeper.state import HealthState, HistoryPoint, Level, ProtocolStatus, SyncOutcome
from mirrorkeeper.verify.drift import DriftReport
from mirrorkeeper.verify.health import HISTORY_SECONDS, MIRROR, OVERALL, Assessment, StepFailure
from mirrorkeeper.verify.probes import EndpointReport


class Notice(StrEnum):
    CHANGED = "changed"
    REMINDER = "reminder"
    RESOLVED = "resolved"


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
                current_at=assessment.current.get(report.protocol),
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
        freshness={p: assessment.freshness(p) for p in protocols},
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
