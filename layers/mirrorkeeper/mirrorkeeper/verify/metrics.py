"""Health as CloudWatch metrics: one list of points, two ways out.

In Lambda the points leave as Embedded Metric Format on stdout (Powertools; no API call, no
PutMetricData permission); locally and for self-hosted runs they go through PutMetricData to
whatever ``--endpoint-url`` names. Both give the same names, units and dimensions, which the
template's alarms and dashboard depend on:

    [Mirror, Protocol]  FreshnessSeconds, ProbesPassed, ProbesFailed, ProbeLatency, MissingFileCheck,
                        HealthLevel
    [Mirror]            HealthLevel (overall), CompletionPercent, DriftObjects, LagEntries,
                        SyncFailed, SyncDurationSeconds, SyncBytes, SyncFilesChanged, SyncS3Requests
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mirrorkeeper.s3errors import aws_errors
from mirrorkeeper.state import SyncOutcome
from mirrorkeeper.verify.drift import DriftReport
from mirrorkeeper.verify.health import Assessment, StepFailure
from mirrorkeeper.verify.probes import EndpointReport

NAMESPACE = "Mirrorkeeper"


@dataclass(frozen=True)
class MetricPoint:
    name: str
    unit: str  # a CloudWatch unit name: Seconds, Count, Milliseconds, Percent, Bytes, None
    values: tuple[float, ...]
    dimensions: tuple[tuple[str, str], ...]


def health_metrics(
    mirror: str,
    assessment: Assessment,
    drift: DriftReport | StepFailure,
    probes: list[EndpointReport] | StepFailure,
    sync: SyncOutcome | None,
    new_report: SyncOutcome | None,
) -> list[MetricPoint]:
    """The points of one verify run. ``sync`` is the last sync's end (SyncFailed, on every run so its
    alarm always has data); ``new_report`` a run report not seen before (its figures are sent once)."""
    points: list[MetricPoint] = []
    base = (("Mirror", mirror),)

    def add(name: str, unit: str, values: Iterable[float], dimensions: tuple[tuple[str, str], ...] = base) -> None:
        found = tuple(float(v) for v in values)
        if found:
            points.append(MetricPoint(name, unit, found, dimensions))

    if not isinstance(probes, StepFailure):
        for report in probes:
            dims = (*base, ("Protocol", report.protocol))
            if report.trace_epoch is not None:
                add("FreshnessSeconds", "Seconds", [max(assessment.checked_at - report.trace_epoch, 0.0)], dims)
            add("ProbesPassed", "Count", [report.passed], dims)
            add("ProbesFailed", "Count", [report.failed], dims)
            add("ProbeLatency", "Milliseconds", [r.latency_ms for r in report.results], dims)
            if report.missing_check is not None:
                add("MissingFileCheck", "Count", [1 if report.missing_check else 0], dims)
    for component, level in assessment.levels.items():
        if component != "mirror":
            add("HealthLevel", "None", [int(level)], (*base, ("Protocol", component)))
    add("HealthLevel", "None", [int(assessment.overall)])
    if not isinstance(drift, StepFailure):
        add("CompletionPercent", "Percent", [drift.completion_pct])
        add("DriftObjects", "Count", [drift.drift])
        add("LagEntries", "Count", [drift.lag])
    if sync is not None:
        add("SyncFailed", "Count", [0 if sync.ok else 1])
    if new_report is not None:
        add("SyncDurationSeconds", "Seconds", [new_report.duration])
        add("SyncBytes", "Bytes", [new_report.uploaded_bytes])
        add("SyncFilesChanged", "Count", [new_report.files_changed])
        add("SyncS3Requests", "Count", [new_report.s3_requests])
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
