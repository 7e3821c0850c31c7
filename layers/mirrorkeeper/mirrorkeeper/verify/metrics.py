"""Health as CloudWatch metrics: one list of points, two ways out.

In Lambda the points leave as Embedded Metric Format on stdout (Powertools; no API call, no
PutMetricData permission); locally and for self-hosted runs they go through PutMetricData to
whatever ``--endpoint-url`` names. Both give the same names, units and dimensions, which the
template's alarms and dashboard depend on.

Custom metrics are billed per name and dimension set, so each mirror has two, and everything the
alarms watch is a host-wide figure over all mirrors: a fixed set, whatever their number.

    [Mirror]     HealthLevel (its overall level), FreshnessSeconds (its stalest protocol)
    [Protocol]   FreshnessSeconds (the stalest mirror), ProbesPassed, ProbesFailed (sums),
                 ProbeLatency, MissingFileCheck (0 when any mirror answered wrongly), HealthLevel
    []           HealthLevel (the worst mirror), MirrorsNotOk, CompletionPercent (the least complete),
                 DriftObjects, LagEntries, SyncFailed (sums), SyncDurationSeconds, SyncBytes,
                 SyncFilesChanged, SyncS3Requests (one value per new sync report)

A mirror's step (publish-health) sends its two and returns its *figures*; the host's step
(publish-host) turns the figures of every mirror into the host-wide points.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mirrorkeeper.s3errors import aws_errors
from mirrorkeeper.state import Level, SyncOutcome
from mirrorkeeper.verify.drift import DriftReport
from mirrorkeeper.verify.health import Assessment, StepFailure
from mirrorkeeper.verify.probes import EndpointReport

NAMESPACE = "Mirrorkeeper"
MAX_VALUES = 150  # CloudWatch takes at most this many values in one datum


@dataclass(frozen=True)
class MetricPoint:
    name: str
    unit: str  # a CloudWatch unit name: Seconds, Count, Milliseconds, Percent, Bytes, None
    values: tuple[float, ...]
    dimensions: tuple[tuple[str, str], ...]


def _point(
    name: str, unit: str, values: Iterable[float], dimensions: tuple[tuple[str, str], ...] = ()
) -> list[MetricPoint]:
    found = tuple(float(v) for v in values)[:MAX_VALUES]
    return [MetricPoint(name, unit, found, dimensions)] if found else []


def mirror_figures(
    assessment: Assessment,
    drift: DriftReport | StepFailure,
    probes: list[EndpointReport] | StepFailure,
    sync: SyncOutcome | None,
    new_report: SyncOutcome | None,
) -> dict[str, Any]:
    """What the host's metrics need of one verified mirror, as JSON (it travels through the workflow).
    ``sync`` is the last sync's end (counted on every run, so the alarm always has data); ``new_report``
    a run report not seen before (its figures are sent once)."""
    endpoints = [] if isinstance(probes, StepFailure) else probes
    measured = None if isinstance(drift, StepFailure) else drift
    return {
        "overall": int(assessment.overall),
        "levels": {c: int(level) for c, level in assessment.levels.items() if c != "mirror"},
        "freshness": {protocol: assessment.freshness(protocol) for protocol in assessment.current},
        "passed": {e.protocol: e.passed for e in endpoints},
        "failed": {e.protocol: e.failed for e in endpoints},
        "latency": {e.protocol: [r.latency_ms for r in e.results] for e in endpoints},
        "missing": {e.protocol: int(e.missing_check) for e in endpoints if e.missing_check is not None},
        "completion": measured.completion_pct if measured else None,
        "drift": measured.drift if measured else None,
        "lag": measured.lag if measured else None,
        "sync_failed": None if sync is None else int(not sync.ok),
        "sync": None
        if new_report is None
        else {
            "duration": new_report.duration,
            "bytes": new_report.uploaded_bytes,
            "files": new_report.files_changed,
            "requests": new_report.s3_requests,
        },
    }


def carried_forward(figures: dict[str, Any], age: float) -> dict[str, Any]:
    """A mirror's figures from a check ``age`` seconds ago, as they stand now: its copies are that much
    older, its sync figures were counted then, and its latencies belong to that check's minute."""
    return figures | {
        "freshness": {protocol: seconds + max(age, 0.0) for protocol, seconds in figures["freshness"].items()},
        "latency": {},
        "sync": None,
    }


def _of(all_figures: list[dict[str, Any]], key: str, protocol: str) -> list[Any]:
    """Each mirror's ``key`` figure for ``protocol``, from the mirrors that have one."""
    return [f[key][protocol] for f in all_figures if protocol in f[key]]


def mirror_points(mirror: str, figures: dict[str, Any]) -> list[MetricPoint]:
    """One mirror's two metrics (the dashboard's per-mirror rows)."""
    dims = (("Mirror", mirror),)
    points = _point("HealthLevel", "None", [figures["overall"]], dims)
    if figures["freshness"]:
        points += _point("FreshnessSeconds", "Seconds", [max(figures["freshness"].values())], dims)
    return points


def host_points(all_figures: list[dict[str, Any]]) -> list[MetricPoint]:
    """The host-wide metrics over every mirror's figures: the fixed set the alarms watch."""
    points: list[MetricPoint] = []
    protocols = sorted({p for f in all_figures for p in f["levels"]})
    for protocol in protocols:
        dims = (("Protocol", protocol),)
        freshness, missing = _of(all_figures, "freshness", protocol), _of(all_figures, "missing", protocol)
        points += _point("FreshnessSeconds", "Seconds", [max(freshness)] if freshness else [], dims)
        points += _point("ProbesPassed", "Count", [sum(_of(all_figures, "passed", protocol))], dims)
        points += _point("ProbesFailed", "Count", [sum(_of(all_figures, "failed", protocol))], dims)
        latency = [ms for values in _of(all_figures, "latency", protocol) for ms in values]
        points += _point("ProbeLatency", "Milliseconds", latency, dims)
        points += _point("MissingFileCheck", "Count", [min(missing)] if missing else [], dims)
        points += _point("HealthLevel", "None", [max(_of(all_figures, "levels", protocol))], dims)
    overall = [f["overall"] for f in all_figures]
    points += _point("HealthLevel", "None", [max(overall, default=int(Level.OK))])
    points += _point("MirrorsNotOk", "Count", [sum(level > Level.OK for level in overall)])

    def known(key: str) -> list[Any]:
        return [f[key] for f in all_figures if f[key] is not None]

    completion = known("completion")
    points += _point("CompletionPercent", "Percent", [min(completion)] if completion else [])
    for key, name in (("drift", "DriftObjects"), ("lag", "LagEntries"), ("sync_failed", "SyncFailed")):
        values = known(key)
        points += _point(name, "Count", [sum(values)] if values else [])
    syncs = known("sync")
    for key, name, unit in (
        ("duration", "SyncDurationSeconds", "Seconds"),
        ("bytes", "SyncBytes", "Bytes"),
        ("files", "SyncFilesChanged", "Count"),
        ("requests", "SyncS3Requests", "Count"),
    ):
        points += _point(name, unit, [s[key] for s in syncs])
    return points


class MetricsSink(Protocol):
    def emit(self, points: list[MetricPoint]) -> None: ...


class EmfSink:
    """Embedded Metric Format through Powertools, one EMF document per dimension set."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace

    def emit(self, points: list[MetricPoint]) -> None:
        from aws_lambda_powertools.metrics import EphemeralMetrics

        groups: dict[tuple[tuple[str, str], ...], list[MetricPoint]] = {}
        for point in points:
            groups.setdefault(point.dimensions, []).append(point)
        for dimensions, group in groups.items():
            metrics = EphemeralMetrics(namespace=self.namespace)
            # Powertools adds a "service" dimension from POWERTOOLS_SERVICE_NAME; the alarms and the
            # dashboard address these metrics by Mirror (and Protocol) alone.
            metrics.service = None  # type: ignore[assignment]
            for name, text in dimensions:
                metrics.add_dimension(name=name, value=text)
            for point in group:
                for value in point.values:
                    metrics.add_metric(name=point.name, unit=point.unit, value=value)
            metrics.flush_metrics()


class CloudWatchSink:
    """PutMetricData: for ``mirrorkeeper verify`` outside Lambda (and moto in tests)."""

    def __init__(self, client: Any, namespace: str = NAMESPACE) -> None:
        self.client = client
        self.namespace = namespace

    def emit(self, points: list[MetricPoint]) -> None:
        data: list[Any] = [
            {
                "MetricName": p.name,
                "Unit": p.unit,
                "Values": list(p.values),
                "Dimensions": [{"Name": n, "Value": v} for n, v in p.dimensions],
            }
            for p in points
        ]
        for start in range(0, len(data), 500):
            with aws_errors("CloudWatch", "accept metrics"):
                self.client.put_metric_data(Namespace=self.namespace, MetricData=data[start : start + 500])
