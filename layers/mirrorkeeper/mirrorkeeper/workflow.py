"""The verify workflow: diff-manifests → probe-endpoints → publish-health.

The deployed workflow is ``statemachine/verify.asl.json`` (Step Functions, one Lambda per step);
``mirrorkeeper verify`` runs :data:`STEPS` here, in the same order, on the same event shapes:

    {"trigger": <ECS Task State Change | scheduled verify>}
      + "drift":  diff_manifests(...)    or {"Error", "Cause"} when the step failed
      + "probes": probe_endpoints(...)   or {"Error", "Cause"}
      + "health": publish_health(...)

A failed diff or probe step does not stop the chain (the state machine's Catch, the local
runner's except): it becomes a finding. A malformed event is an :class:`InvalidEventError`
naming the field, which the state machine does not retry.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mirrorkeeper.alerts import LogNotifier, Notifier, SnsNotifier, compose
from mirrorkeeper.aws import S3Client, s3_client, service_client
from mirrorkeeper.config import VerifyConfig
from mirrorkeeper.drift import DriftReport, RepairList, diff_mirror
from mirrorkeeper.errors import ConfigError, StateConflictError
from mirrorkeeper.health import OVERALL, StepFailure, SyncOutcome, assess, sync_from_exit
from mirrorkeeper.healthstate import HealthState, decide_notice, next_state
from mirrorkeeper.metrics import CloudWatchSink, EmfSink, MetricsSink, health_metrics
from mirrorkeeper.probes import EndpointReport, choose_sample, probe_all
from mirrorkeeper.report import SyncResult
from mirrorkeeper.statestore import StateStore
from mirrorkeeper.status import STATUS_HTML_PATH, STATUS_JSON_PATH, render_status_html, render_status_json

log = logging.getLogger(__name__)
SYNC_CONTAINER = "sync"
STATE_WRITE_ATTEMPTS = 3


class InvalidEventError(ConfigError):
    """The event does not have the shape this step expects; the message names the field."""


# -- event shapes -------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class EcsContainer(_Model):
    name: str = ""
    exitCode: int | None = None  # noqa: N815 - ECS's field name
    reason: str = ""


class EcsTaskDetail(_Model):
    taskArn: str  # noqa: N815
    lastStatus: Literal["STOPPED"]  # noqa: N815
    stoppedReason: str = ""  # noqa: N815
    stopCode: str = ""  # noqa: N815
    stoppedAt: datetime | None = None  # noqa: N815
    containers: list[EcsContainer] = Field(default_factory=list)


class EcsTaskStateChange(_Model):
    """EventBridge's ECS Task State Change event for the sync task, filtered to STOPPED."""

    source: Literal["aws.ecs"]
    detail_type: Literal["ECS Task State Change"] = Field(alias="detail-type")
    id: str = ""
    time: datetime
    detail: EcsTaskDetail


class ScheduledVerify(_Model):
    """The verify schedule's input (and what ``mirrorkeeper verify`` sends by default)."""

    source: Literal["mirrorkeeper.schedule", "mirrorkeeper.cli"]
    detail_type: str = Field(alias="detail-type", default="Scheduled verify")
    id: str = ""
    time: str = ""


Trigger = Annotated[EcsTaskStateChange | ScheduledVerify, Field(discriminator="source")]


class StepError(_Model):
    """What Step Functions' Catch (and the local runner) records for a failed step."""

    Error: str
    Cause: str = ""

    def failure(self) -> StepFailure:
        return StepFailure(self.Error, self.Cause[:500])


@dataclass
class ProbeRun:
    endpoints: list[EndpointReport] = field(default_factory=list)
    sample: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"sample": self.sample, "endpoints": [e.to_json() for e in self.endpoints]}


class DiffInput(_Model):
    trigger: Trigger


class ProbeInput(_Model):
    trigger: Trigger


class PublishInput(_Model):
    trigger: Trigger
    # StepError first: every DriftReport field has a default, so any object would pass as one.
    drift: StepError | DriftReport = Field(union_mode="left_to_right")
    probes: StepError | ProbeRun = Field(union_mode="left_to_right")


def parse_event[M: BaseModel](model: type[M], event: Any) -> M:
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise InvalidEventError(
            f"the {model.__name__} event is malformed ({problems}); compare it with the samples in events/"
        ) from None


# -- what the steps need ----------------------------------------------------------------------


@dataclass
class Deps:
    config: VerifyConfig
    s3: S3Client
    metrics: MetricsSink
    notifier: Notifier
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)

    @property
    def store(self) -> StateStore:
        return StateStore(self.s3, self.config.layout)

    @classmethod
    def create(cls, config: VerifyConfig, metrics: str = "cloudwatch") -> Deps:
        """``metrics``: "emf" in Lambda (stdout), "cloudwatch" elsewhere (PutMetricData), or "none"."""
        sink: MetricsSink
        if metrics == "emf":
            sink = EmfSink(config.metrics_namespace)
        elif metrics == "cloudwatch":
            sink = CloudWatchSink(service_client("cloudwatch", config.aws), config.metrics_namespace)
        else:
            sink = _NoMetrics()
        notifier: Notifier = (
            SnsNotifier(service_client("sns", config.aws), config.topic_arn) if config.topic_arn else LogNotifier()
        )
        return cls(config, s3_client(config.aws), sink, notifier)


class _NoMetrics:
    def emit(self, points: list[Any]) -> None:
        log.info("metrics not sent (--metrics none)", extra={"points": len(points)})


# -- step 1: diff-manifests ---------------------------------------------------------------------


def diff_manifests(event: Any, deps: Deps) -> dict[str, Any]:
    parse_event(DiffInput, event)
    layout, store = deps.config.layout, deps.store
    report, repair = DriftReport(), RepairList()
    lease, _ = store.read_json(layout.lock_key)
    # A running sync has uploaded objects its manifest does not list yet: not drift.
    report.sync_in_progress = bool(lease) and _float(lease, "expires_at") > deps.clock()
    with store.manifest_rows(layout.listing_key) as listing, store.manifest_rows(layout.manifest_key) as manifest:
        report.listing_generated = listing[0].generated if listing else ""
        report.manifest_generated = manifest[0].generated if manifest else ""
        diff_mirror(
            listing[1] if listing else None,
            manifest[1] if manifest else None,
            store.served_objects(),
            report,
            repair,
        )
    if not report.sync_in_progress and report.manifest_generated:
        # The next sync uploads again what is missing or damaged and deletes what nobody published.
        store.put_or_delete_json(layout.repair_key, repair.to_json() if repair else None)
        if repair:
            store.flag_manifest_for_repair()
    log.info("diff done", extra={"drift": report.drift, "lag": report.lag, "completion_pct": report.completion_pct})
    return report.to_json()


def _float(doc: dict[str, Any] | None, key: str) -> float:
    try:
        return float((doc or {}).get(key, 0.0))
    except (TypeError, ValueError):
        return 0.0


# -- step 2: probe-endpoints --------------------------------------------------------------------


def probe_endpoints(event: Any, deps: Deps) -> dict[str, Any]:
    parse_event(ProbeInput, event)
    config = deps.config
    with deps.store.manifest_rows(config.layout.manifest_key) as manifest:
        sample = (
            choose_sample(
                manifest[1],
                config.late_patterns,
                config.sample_random,
                config.sample_newest,
                config.sample_late,
                config.sample_download,
                config.download_max_bytes,
                deps.rng,
            )
            if manifest
            else []
        )
    endpoints = probe_all(config.endpoints, sample, config.trace_path, config.probe_timeout, config.probe_concurrency)
    for report in endpoints:
        log.info(
            "probed",
            extra={"protocol": report.protocol, "passed": report.passed, "failed": report.failed},
        )
    return ProbeRun(endpoints, len(sample)).to_json()


# -- step 3: publish-health ---------------------------------------------------------------------


def _report_outcome(doc: dict[str, Any] | None) -> SyncOutcome | None:
    if not doc or not doc.get("finished"):
        return None
    try:
        result = SyncResult(doc.get("result", "failed"))
        exit_code = int(doc.get("exit_code", 1))
    except (ValueError, TypeError):
        return None
    ok, reason = sync_from_exit(exit_code, str(doc.get("error", "")))
    ok = ok and result is not SyncResult.FAILED
    return SyncOutcome(
        finished=float(doc["finished"]),
        ok=ok,
        exit_code=exit_code,
        reason=reason,
        source="run-report",
        run_id=str(doc.get("run_id", "")),
        duration=float(doc.get("duration", 0.0)),
        uploaded_bytes=int(doc.get("uploaded_bytes", 0)),
        files_changed=int(doc.get("uploaded_files", 0)) + int(doc.get("deleted_objects", 0)),
        s3_requests=int(doc.get("s3_requests", 0)),
    )


def _event_outcome(trigger: EcsTaskStateChange) -> SyncOutcome:
    detail = trigger.detail
    container = next((c for c in detail.containers if c.name == SYNC_CONTAINER), None)
    container = container or next((c for c in detail.containers if c.exitCode is not None), None)
    exit_code = container.exitCode if container else None
    reason = "; ".join(r for r in (detail.stoppedReason, container.reason if container else "") if r)
    ok, sentence = sync_from_exit(exit_code, reason)
    stopped = detail.stoppedAt or trigger.time
    return SyncOutcome(stopped.timestamp(), ok, exit_code, sentence, "ecs-event", run_id=detail.taskArn)


def latest_sync(*candidates: SyncOutcome | None) -> SyncOutcome | None:
    """The most recent sync end we know of: a crash leaves no run report, only the ECS event."""
    found = [c for c in candidates if c is not None]
    return max(found, key=lambda c: c.finished) if found else None


def publish_health(event: Any, deps: Deps) -> dict[str, Any]:
    parsed = parse_event(PublishInput, event)
    config, store, now = deps.config, deps.store, deps.clock()
    drift = parsed.drift.failure() if isinstance(parsed.drift, StepError) else parsed.drift
    probes = parsed.probes.failure() if isinstance(parsed.probes, StepError) else parsed.probes.endpoints
    report = _report_outcome(store.read_json(config.layout.last_run_key)[0])
    from_event = _event_outcome(parsed.trigger) if isinstance(parsed.trigger, EcsTaskStateChange) else None
    status_url = config.http_url + STATUS_HTML_PATH if config.http_url else ""
    for _ in range(STATE_WRITE_ATTEMPTS):
        doc, etag = store.read_json(store.health_key)
        previous = HealthState.from_json(doc)
        sync = latest_sync(previous.last_sync, report, from_event)
        assessment = assess(now, config.sync_interval, list(config.endpoints), drift, probes, sync, config.cache_grace)
        notice = decide_notice(previous, assessment, now, config.reminder_interval)
        state = next_state(previous, assessment, drift, probes, sync, notified=notice is not None)
        new_report = report if report and report.run_id != previous.last_report_run_id else None
        if report:
            state.last_report_run_id = report.run_id
        try:
            store.write_json(store.health_key, state.to_json(), etag)
            break
        except StateConflictError:
            log.info("health state changed under us (another verify run); recomputing")
    else:
        raise StateConflictError(
            f"could not record health after {STATE_WRITE_ATTEMPTS} attempts: other verify runs keep writing "
            f"s3://{config.layout.bucket}/{store.health_key}; check for a runaway schedule"
        )
    # After the state write: of two concurrent runs that see the same change, only one sends.
    if notice is not None:
        deps.notifier.send(compose(notice, config.mirror_name, previous, assessment, status_url))
    store.publish(
        STATUS_JSON_PATH, render_status_json(state, config.mirror_name, config.sync_interval, now), "application/json"
    )
    store.publish(
        STATUS_HTML_PATH,
        render_status_html(state, config.mirror_name, config.sync_interval, now),
        "text/html; charset=utf-8",
    )
    deps.metrics.emit(health_metrics(config.mirror_name, assessment, drift, probes, sync, new_report))
    log.info(
        "health published",
        extra={"overall": assessment.overall.label, "notice": notice.value if notice else None},
    )
    return {
        "overall": assessment.overall.label,
        "levels": state.levels,
        "findings": [f.to_json() for f in assessment.findings],
        "notice": notice.value if notice else None,
        "previous_overall": previous.levels.get(OVERALL, "ok"),
        "status_page": status_url or STATUS_HTML_PATH,
    }


# -- the chain ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str  # the state's name in statemachine/verify.asl.json
    result_key: str  # its ResultPath, without "$."
    run: Callable[[Any, Deps], dict[str, Any]]
    recorded_on_failure: bool  # the state has a Catch that records the error and goes on


STEPS = (
    Step("DiffManifests", "drift", diff_manifests, recorded_on_failure=True),
    Step("ProbeEndpoints", "probes", probe_endpoints, recorded_on_failure=True),
    Step("PublishHealth", "health", publish_health, recorded_on_failure=False),
)


def run_chain(trigger: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """What the state machine does, in-process: returns the final state document."""
    state: dict[str, Any] = {"trigger": trigger}
    parse_event(DiffInput, state)  # a bad trigger stops here, as the first Lambda would refuse it
    for step in STEPS:
        try:
            state[step.result_key] = step.run(state, deps)
        except Exception as exc:
            if not step.recorded_on_failure or isinstance(exc, InvalidEventError):
                raise
            log.error("step failed; recorded as a finding", extra={"step": step.name, "error": str(exc)})
            state[step.result_key] = {"Error": type(exc).__name__, "Cause": str(exc)}
    return state


def cli_trigger(now: float) -> dict[str, Any]:
    return {
        "source": "mirrorkeeper.cli",
        "detail-type": "Scheduled verify",
        "id": f"cli-{int(now)}-{random.getrandbits(32):08x}",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
    }
