"""The verify workflow: list-mirrors, then for each mirror diff-manifests → probe-endpoints →
publish-health, then publish-host.

The deployed workflow is ``statemachine/verify.asl.json`` (Step Functions, one Lambda per step, a
Map over the mirrors); ``mirrorkeeper verify`` runs the same steps here (:func:`run_host`), in the
same order, on the same event shapes:

    {"trigger": <ECS Task State Change | scheduled verify>}
      + "mirrors": list_mirrors(...)     {"mirrors": [{"mirror": NAME}, ...]} ('' for a host of one)
      for each: {"trigger", "mirror"}
        + "drift":  diff_manifests(...)  or {"Error", "Cause"} when the step failed
        + "probes": probe_endpoints(...) or {"Error", "Cause"}
        + "health": publish_health(...)  or {"Error", "Cause"}
      + "results": [{"mirror", "health"}, ...]
      + "host": publish_host(...)

A failed diff or probe step does not stop the chain (the state machine's Catch, the local
runner's except): it becomes a finding. A malformed event is an :class:`InvalidEventError`
naming the field, which the state machine does not retry.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mirrorkeeper.aws import S3Client, SharedClients
from mirrorkeeper.config import VERIFY, VerifyConfig, resolve, verify_config
from mirrorkeeper.errors import ConfigError, ExitCode, HealthNotPublishedError, StateConflictError
from mirrorkeeper.host import MirrorEntry, mirror_entries, summarise_all
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.s3errors import s3_errors
from mirrorkeeper.state import (
    STATUS_HTML_PATH,
    STATUS_JSON_PATH,
    RepairList,
    RunReport,
    StateStore,
    SyncOutcome,
    SyncResult,
)
from mirrorkeeper.verify.alerts import LogNotifier, Notifier, SnsNotifier, compose, compose_quarantine
from mirrorkeeper.verify.drift import DriftReport, diff_mirror
from mirrorkeeper.verify.events import (
    DiffInput,
    EcsTaskStateChange,
    HostInput,
    InvalidEventError,
    ListInput,
    ProbeInput,
    ProbeRun,
    PublishInput,
    StepError,
    parse_event,
)
from mirrorkeeper.verify.frontpage import MIRRORS_JSON_PATH, directory_pages, render_front_page, render_mirrors_json
from mirrorkeeper.verify.health import OVERALL, assess, sync_from_exit
from mirrorkeeper.verify.history import decide_notice, next_state
from mirrorkeeper.verify.metrics import (
    CloudWatchSink,
    EmfSink,
    MetricsSink,
    carried_forward,
    host_points,
    mirror_figures,
    mirror_points,
)
from mirrorkeeper.verify.probes import choose_sample, probe_all
from mirrorkeeper.verify.status import render_status_html, render_status_json

log = logging.getLogger(__name__)
SYNC_CONTAINER = "sync"
MAP_CONCURRENCY = 10  # mirrors checked at once (the state machine's Map has the same bound)
STATE_WRITE_ATTEMPTS = 3


# -- what the steps need ----------------------------------------------------------------------


@dataclass
class Deps:
    config: VerifyConfig
    s3: S3Client
    metrics: MetricsSink
    notifier: Notifier
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    # The host's mirrors (its config file), for the host's steps: which to check, and its front page.
    mirrors: list[MirrorEntry] = field(default_factory=list)

    @property
    def store(self) -> StateStore:
        return StateStore(self.s3, self.config.layout)

    @classmethod
    def create(
        cls,
        config: VerifyConfig,
        metrics: str = "cloudwatch",
        mirrors: list[MirrorEntry] | None = None,
        *,
        clients: SharedClients,
    ) -> Deps:
        """``metrics``: "emf" in Lambda (stdout), "cloudwatch" elsewhere (PutMetricData), or "none";
        ``clients``: the host's, shared by all its mirrors."""
        sink: MetricsSink
        if metrics == "emf":
            sink = EmfSink(config.metrics_namespace)
        elif metrics == "cloudwatch":
            sink = CloudWatchSink(clients.service("cloudwatch", config.aws), config.metrics_namespace)
        else:
            sink = _NoMetrics()
        notifier: Notifier = (
            SnsNotifier(clients.service("sns", config.aws), config.topic_arn) if config.topic_arn else LogNotifier()
        )
        return cls(config, clients.s3(config.aws), sink, notifier, mirrors=mirrors or [])


@dataclass(frozen=True)
class HostDeps:
    """The host's Deps (its mirrors, its front page, its metrics) and a way to each mirror's, from one
    reading of the settings and config file. A host of one is its own only mirror, named ''."""

    host: Deps
    settings: dict[str, dict[str, Any]]
    metrics: str
    clients: SharedClients

    @classmethod
    def load(cls, flags: dict[str, Any], metrics: str, environ: dict[str, str] | None = None) -> HostDeps:
        entries = mirror_entries(VERIFY, flags, environ)
        values = resolve(VERIFY, flags, environ, mirror="" if entries else None)
        clients = SharedClients()
        deps = Deps.create(verify_config(values), metrics, [entry for entry, _ in entries], clients=clients)
        return cls(deps, {entry.name: mirror_values for entry, mirror_values in entries}, metrics, clients)

    def mirror(self, name: str) -> Deps:
        if not name and not self.settings:
            return self.host
        if name not in self.settings:
            raise ConfigError(f"no mirror {name!r} in the host's config file; its mirrors: {', '.join(self.settings)}")
        return Deps.create(verify_config(self.settings[name]), self.metrics, clients=self.clients)


class _NoMetrics:
    def emit(self, points: list[Any]) -> None:
        log.info("metrics not sent (--metrics none)", extra={"points": len(points)})


# -- step 1: diff-manifests ---------------------------------------------------------------------


def diff_manifests(event: Any, deps: Deps) -> dict[str, Any]:
    parse_event(DiffInput, event)
    store = deps.store
    report, repair = DriftReport(), RepairList()
    lease = store.read_lease()
    # A running sync has uploaded objects its manifest does not list yet: not drift.
    report.sync_in_progress = lease is not None and not lease.expired
    with store.manifest_rows(store.listing_key) as listing, store.manifest_rows(store.manifest_key) as manifest:
        report.listing_generated = listing[0].generated if listing else ""
        report.manifest_generated = manifest[0].generated if manifest else ""
        diff_mirror(
            listing[1] if listing else None,
            manifest[1] if manifest else None,
            served_objects(deps.s3, deps.config.layout),
            report,
            repair,
        )
    if not report.sync_in_progress and report.manifest_generated:
        # The next sync uploads again what is missing or damaged and deletes what nobody published.
        store.write_repair_list(repair)
        if repair:
            store.flag_manifest_for_repair()
    log.info("diff done", extra={"drift": report.drift, "lag": report.lag, "completion_pct": report.completion_pct})
    return report.to_json()


def served_objects(client: S3Client, layout: MirrorLayout) -> Iterator[tuple[str, int]]:
    """``(key relative to the served prefix, size)`` of every served object, in key order."""
    prefix = layout.served_prefix
    paginator = client.get_paginator("list_objects_v2")
    with s3_errors(f"list s3://{layout.bucket}/{prefix}"):
        for page in paginator.paginate(Bucket=layout.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                yield item["Key"][len(prefix) :], int(item["Size"])


# -- step 2: probe-endpoints --------------------------------------------------------------------


def probe_endpoints(event: Any, deps: Deps) -> dict[str, Any]:
    parse_event(ProbeInput, event)
    config = deps.config
    with deps.store.manifest_rows(deps.store.manifest_key) as manifest:
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


SHOWN_PATHS = 20  # skipped and quarantined paths carried to the status page


def _report_outcome(report: RunReport | None) -> SyncOutcome | None:
    if report is None:
        return None
    detail = report.held_because if report.exit_code == ExitCode.DELETION_GUARD else ""
    if report.exit_code == ExitCode.PARTIAL and report.failed:
        first = report.failed[0]
        detail = f"{report.failed_total} paths, first {first['path']}: {first['reason']}"
    ok, reason = sync_from_exit(report.exit_code, detail or report.error)
    return SyncOutcome(
        finished=report.finished,
        ok=ok and report.result is not SyncResult.FAILED,
        exit_code=report.exit_code,
        reason=reason,
        source="run-report",
        run_id=report.run_id,
        duration=report.duration,
        uploaded_bytes=report.uploaded_bytes,
        files_changed=report.uploaded_files + report.deleted_objects,
        s3_requests=report.s3_requests,
        failed=tuple((f["path"], f["reason"]) for f in report.failed[:SHOWN_PATHS]),
        quarantined=tuple((q["path"], str(q["reason"])) for q in report.quarantined[:SHOWN_PATHS]),
        newly_quarantined=tuple(report.newly_quarantined[:SHOWN_PATHS]),
        held_deletions=report.held_deletions,
        held_examples=tuple(report.held_deletion_examples[:SHOWN_PATHS]),
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
    report = _report_outcome(store.last_run_report())
    edge = store.edge_record()
    from_event = _event_outcome(parsed.trigger) if isinstance(parsed.trigger, EcsTaskStateChange) else None
    status_url = config.http_url + STATUS_HTML_PATH if config.http_url else ""
    for _ in range(STATE_WRITE_ATTEMPTS):
        previous, etag = store.read_health()
        sync = latest_sync(previous.last_sync, report, from_event)
        assessment = assess(
            now, config.sync_interval, list(config.endpoints), drift, probes, sync, config.cache_grace, edge
        )
        notice = decide_notice(previous, assessment, now, config.reminder_interval)
        state = next_state(previous, assessment, drift, probes, sync, notified=notice is not None)
        new_report = report if report and report.run_id != previous.last_report_run_id else None
        if report:
            state.last_report_run_id = report.run_id
        state.figures = figures = mirror_figures(assessment, drift, probes, sync, new_report)
        try:
            store.write_health(state, etag)
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
    quarantined = new_report.newly_quarantined if new_report else ()
    if quarantined:
        # Once, when the sync quarantines them: from then on they are listed, not alerted again.
        deps.notifier.send(compose_quarantine(config.mirror_name, new_report, status_url))
    store.publish(
        STATUS_JSON_PATH, render_status_json(state, config.mirror_name, config.sync_interval, now), "application/json"
    )
    store.publish(
        STATUS_HTML_PATH,
        render_status_html(state, config.mirror_name, config.sync_interval, now),
        "text/html; charset=utf-8",
    )
    deps.metrics.emit(mirror_points(config.mirror_name, figures))
    log.info(
        "health published",
        extra={"overall": assessment.overall.label, "notice": notice.value if notice else None},
    )
    return {
        "mirror": parsed.mirror,
        "figures": figures,
        "overall": assessment.overall.label,
        "levels": state.levels,
        "findings": [f.to_json() for f in assessment.findings],
        "notice": notice.value if notice else None,
        "quarantine_alert": list(quarantined),
        "previous_overall": previous.levels.get(OVERALL, "ok"),
        "status_page": status_url or STATUS_HTML_PATH,
    }


# -- the host: which mirrors to check, then what all of them add up to ----------------------------


def list_mirrors(event: Any, deps: Deps) -> dict[str, Any]:
    """The mirrors this run checks: the one whose sync task just stopped, else every enabled, unpaused
    mirror of the host ('' for a host of one)."""
    parsed = parse_event(ListInput, event)
    if parsed.only:
        if parsed.only not in {m.name for m in deps.mirrors}:
            raise ConfigError(f"no mirror {parsed.only!r} in the host's config file")
        return {"mirrors": [{"mirror": parsed.only}]}
    synced = parsed.trigger.detail.mirror if isinstance(parsed.trigger, EcsTaskStateChange) else None
    live = [m.name for m in deps.mirrors if m.enabled and not m.paused]
    if synced is not None and synced in live:
        live = [synced]
    return {"mirrors": [{"mirror": name} for name in live] if deps.mirrors else [{"mirror": ""}]}


def publish_host(event: Any, deps: Deps) -> dict[str, Any]:
    """Host-wide metrics from every mirror's figures (the fixed set the alarms watch) and, for a host of
    several mirrors, its front page and ``/.mirrorkeeper/mirrors.json``. A mirror whose publish-health
    failed fails this step once the rest is published, so the execution fails (and is alarmed) without
    the other mirrors losing their pages."""
    parsed = parse_event(HostInput, event)
    published = {r.mirror: r.health for r in parsed.results if "overall" in r.health}
    failed = {r.mirror: str(r.health.get("Cause") or r.health) for r in parsed.results if r.mirror not in published}
    not_ok = sorted(name for name, health in published.items() if health["overall"] != "ok")
    figures = [health["figures"] for health in published.values()]
    checked = {r.mirror for r in parsed.results}
    front_page = ""
    if deps.mirrors:
        now = deps.clock()
        summaries = summarise_all(deps.s3, deps.mirrors, now)
        # The alarms watch the whole host: a mirror this run did not check counts by its last check.
        figures += [
            carried_forward(s.figures, now - s.checked_at)
            for s in summaries
            if s.name not in checked and s.enabled and not s.paused and s.figures
        ]
        host = StateStore(deps.s3, deps.config.layout.host)
        host_name = deps.config.host_name or deps.config.layout.bucket
        host.publish_page("", render_front_page(host_name, summaries, now))
        for directory, page in directory_pages(host_name, summaries, now).items():
            host.publish_page(directory, page)
        host.publish(MIRRORS_JSON_PATH, render_mirrors_json(summaries), "application/json")
        front_page = deps.config.host_url or "/"
    deps.metrics.emit(host_points(figures))
    log.info("host published", extra={"mirrors": len(parsed.results), "not_ok": not_ok, "failed": sorted(failed)})
    if failed:
        causes = "; ".join(f"{name or deps.config.mirror_name}: {cause}" for name, cause in sorted(failed.items()))
        raise HealthNotPublishedError(
            f"publish-health failed for {len(failed)} of {len(parsed.results)} mirrors ({causes}); their status "
            "pages and metrics are stale until the next verify"
        )
    return {"mirrors": len(parsed.results), "not_ok": not_ok, "front_page": front_page}


def run_host(trigger: dict[str, Any], deps: HostDeps, only: str = "") -> dict[str, Any]:
    """What the deployed workflow does, in-process: list the mirrors, check each (several at once, as
    the state machine's Map does), then the host's step. Returns the list step's result, each
    mirror's final state document and the host step's result."""
    listed = list_mirrors({"trigger": trigger, "only": only}, deps.host)["mirrors"]

    def check(item: dict[str, str]) -> dict[str, Any]:
        return run_chain(trigger, deps.mirror(item["mirror"]), item["mirror"])

    with ThreadPoolExecutor(max(1, min(MAP_CONCURRENCY, len(listed))), thread_name_prefix="mirror") as pool:
        states = list(pool.map(check, listed))
    results = [{"mirror": state["mirror"], "health": state["health"]} for state in states]
    try:
        host = publish_host({"trigger": trigger, "results": results}, deps.host)
    except HealthNotPublishedError as exc:  # the state machine's execution fails here; the CLI reports it
        host = {"Error": type(exc).__name__, "Cause": str(exc)}
    return {"trigger": trigger, "mirrors": states, "host": host}


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
    # Recorded too: one mirror's failure must not cost the others theirs; publish-host then fails.
    Step("PublishHealth", "health", publish_health, recorded_on_failure=True),
)


def run_chain(trigger: dict[str, Any], deps: Deps, mirror: str = "") -> dict[str, Any]:
    """What the state machine does for one mirror, in-process: returns the final state document."""
    state: dict[str, Any] = {"trigger": trigger, "mirror": mirror}
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
    """The scheduled-verify event ``mirrorkeeper verify`` starts the chain with: every EventBridge
    field, account and region empty because the command line is not an AWS service and would need an
    STS call to learn the account."""
    return {
        "version": "0",
        "id": f"cli-{int(now)}-{random.getrandbits(32):08x}",
        "detail-type": "Scheduled verify",
        "source": "mirrorkeeper.cli",
        "account": "",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "region": "",
        "resources": [],
        "detail": {},
    }
