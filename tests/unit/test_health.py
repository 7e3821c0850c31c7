"""The health rules, the edge-triggered notices and the alert text, on constructed reports (no network)."""

import json

import pytest

from mirrorkeeper.state import EdgeBatch, EdgeRecord, EdgeStatus, HealthState, Level, SyncOutcome
from mirrorkeeper.verify.alerts import SUBJECT_LIMIT, compose
from mirrorkeeper.verify.drift import DriftReport
from mirrorkeeper.verify.health import StepFailure, assess, sync_from_exit
from mirrorkeeper.verify.history import Notice, decide_notice, next_state
from mirrorkeeper.verify.metrics import carried_forward, host_points, mirror_figures, mirror_points
from mirrorkeeper.verify.probes import EndpointReport, Outcome, ProbeKind, ProbeResult

HOUR = 3600.0
NOW = 1_800_000_000.0


def endpoint(
    protocol: str = "http", age: float = 60.0, missing: Outcome = Outcome.OK, at: float = NOW, **bad: Outcome
) -> EndpointReport:
    results = [
        ProbeResult(ProbeKind.ROOT, "", Outcome.OK, latency_ms=3.0),
        ProbeResult(ProbeKind.TRACE, ".mirrorkeeper/trace", Outcome.OK, latency_ms=2.0),
        ProbeResult(ProbeKind.MISSING, "mirrorkeeper-probe-missing-x", missing, "answered 403", 2.5),
        ProbeResult(ProbeKind.FILE, "a.rpm", bad.get("file", Outcome.OK), "size", 1.0),
    ]
    return EndpointReport(protocol, f"{protocol}://127.0.0.1:1/", results, trace_epoch=int(at - age))


def unreachable(protocol: str = "ftp") -> EndpointReport:
    return EndpointReport(
        protocol, "ftp://127.0.0.1:1/", [ProbeResult(ProbeKind.ROOT, "", Outcome.UNREACHABLE, "refused")]
    )


def clean_drift() -> DriftReport:
    return DriftReport(
        listing_entries=3, manifest_entries=3, objects=3, complete=3, manifest_generated="x", listing_generated="x"
    )


def test_a_healthy_mirror_is_ok_everywhere() -> None:
    result = assess(NOW, HOUR, ["http", "ftp"], clean_drift(), [endpoint(), endpoint("ftp")], None)
    assert result.levels == {"http": Level.OK, "ftp": Level.OK, "mirror": Level.OK}
    assert result.overall is Level.OK and result.findings == []


@pytest.mark.parametrize(
    ("age_hours", "level"), [(1.9, Level.OK), (2.1, Level.DEGRADED), (5.9, Level.DEGRADED), (6.1, Level.DOWN)]
)
def test_freshness_thresholds_are_multiples_of_the_sync_interval(age_hours: float, level: Level) -> None:
    result = assess(NOW, HOUR, ["http"], clean_drift(), [endpoint(age=age_hours * HOUR)], None)
    assert result.levels["http"] is level


def test_unreachable_is_down_and_wrong_missing_status_is_degraded() -> None:
    result = assess(
        NOW, HOUR, ["http", "ftp"], clean_drift(), [endpoint(missing=Outcome.WRONG_STATUS), unreachable()], None
    )
    assert result.levels["http"] is Level.DEGRADED and "403" in result.reasons("http")[0]
    assert result.levels["ftp"] is Level.DOWN and result.overall is Level.DOWN


def test_a_failed_file_probe_is_degraded_and_named() -> None:
    result = assess(NOW, HOUR, ["http"], clean_drift(), [endpoint(file=Outcome.WRONG_SIZE)], None)
    assert result.levels["http"] is Level.DEGRADED
    assert "a.rpm" in result.reasons("http")[0] and "wrong-size" in result.reasons("http")[0]


def test_a_stale_copy_is_forgiven_within_the_grace_unless_its_invalidation_had_completed() -> None:
    # GIVEN a probe, ten minutes after the sync, that found a.rpm served older than the manifest
    report = endpoint(age=600.0, file=Outcome.STALE)
    report.probed_at = NOW - 5
    # WHEN the sync invalidated nothing, or its invalidation of a.rpm completed only after the probe
    for edge in (None, EdgeRecord("r", batches=[EdgeBatch("data", ["/a.rpm"], EdgeStatus.COMPLETED, completed=NOW)])):
        result = assess(NOW, HOUR, ["http"], clean_drift(), [report], None, edge=edge)
        # THEN it is a cache not yet expired: ok, said so
        assert result.levels["http"] is Level.OK and "older than the last sync" in result.reasons("http")[0]
    # WHEN it completed before the probe (a wildcard over the directory counts)
    for paths in (["/a.rpm"], ["/*"]):
        edge = EdgeRecord("r", batches=[EdgeBatch("data", paths, EdgeStatus.COMPLETED, completed=NOW - 60)])
        result = assess(NOW, HOUR, ["http"], clean_drift(), [report], None, edge=edge)
        # THEN the edge kept a copy it was told to drop: degraded at once, whatever the grace
        assert result.levels["http"] is Level.DEGRADED
        assert result.reasons("http") == [
            "1 files served older than the last sync although its invalidation of them had completed before the "
            "probe (first: a.rpm: size); the edge did not drop them"
        ]


def test_drift_and_failed_sync_degrade_the_mirror_but_not_while_a_sync_runs() -> None:
    drifted = clean_drift()
    drifted.missing = 2
    failed = SyncOutcome(NOW, False, 1, "the sync failed (exit 1)", "ecs-event")
    result = assess(NOW, HOUR, ["http"], drifted, [endpoint()], failed)
    assert result.levels["mirror"] is Level.DEGRADED and len(result.reasons("mirror")) == 2
    drifted.sync_in_progress = True
    assert assess(NOW, HOUR, ["http"], drifted, [endpoint()], None).levels["mirror"] is Level.OK


def test_failed_steps_become_findings() -> None:
    failure = StepFailure("StorageError", "S3 refused")
    result = assess(NOW, HOUR, ["http", "ftp"], failure, failure, None)
    assert set(result.levels.values()) == {Level.DEGRADED}


@pytest.mark.parametrize(
    ("code", "ok", "words"),
    [
        (0, True, "synced"),
        (3, True, "lock"),
        (4, False, "--force-delete"),
        (5, False, "retries them"),
        (6, True, "mid-update"),  # a warning: only a busy spell long enough to leave the trace stale degrades
        (1, False, "exit 1"),
        (130, False, "stopped before it finished"),
        (None, False, "never"),
    ],
)
def test_sync_exit_codes_read_as_operators_expect(code: int | None, ok: bool, words: str) -> None:
    healthy, reason = sync_from_exit(code, "CannotPullContainerError" if code is None else "")
    assert healthy is ok and words in reason


def test_notices_fire_on_change_remind_while_bad_and_resolve_once() -> None:
    # GIVEN a healthy history
    state = HealthState()
    ok = assess(NOW, HOUR, ["ftp"], clean_drift(), [endpoint("ftp")], None)
    assert decide_notice(state, ok, NOW, 6 * HOUR) is None
    state = next_state(state, ok, clean_drift(), [endpoint("ftp")], None, notified=False)
    # WHEN ftp goes down: one "changed" notice
    down = assess(NOW + 60, HOUR, ["ftp"], clean_drift(), [unreachable()], None)
    assert decide_notice(state, down, NOW + 60, 6 * HOUR) is Notice.CHANGED
    state = next_state(state, down, clean_drift(), [unreachable()], None, notified=True)
    # THEN nothing more while it stays down, until the reminder interval has passed
    later = assess(NOW + 120, HOUR, ["ftp"], clean_drift(), [unreachable()], None)
    assert decide_notice(state, later, NOW + 120, 6 * HOUR) is None
    much_later = assess(NOW + 7 * HOUR, HOUR, ["ftp"], clean_drift(), [unreachable()], None)
    assert decide_notice(state, much_later, NOW + 7 * HOUR, 6 * HOUR) is Notice.REMINDER
    # AND the return to ok is one "resolved" notice
    back = assess(NOW + 8 * HOUR, HOUR, ["ftp"], clean_drift(), [endpoint("ftp", at=NOW + 8 * HOUR)], None)
    assert decide_notice(state, back, NOW + 8 * HOUR, 6 * HOUR) is Notice.RESOLVED


def test_state_round_trips_and_keeps_14_days_of_history() -> None:
    state = HealthState()
    for hour in range(0, 16 * 24, 6):
        now = NOW + hour * HOUR
        result = assess(now, HOUR, ["http"], clean_drift(), [endpoint(age=60)], None)
        state = next_state(state, result, clean_drift(), [endpoint(age=60)], None, notified=False)
    again = HealthState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state
    assert state.history[-1].t - state.history[0].t < 14 * 24 * HOUR
    assert len(state.history) == 14 * 4


def test_damaged_state_starts_afresh() -> None:
    assert HealthState.from_json({"version": 1, "levels": "nonsense", "history": [{"x": 1}]}) == HealthState()


def test_alert_subject_is_short_ascii_and_the_json_names_the_change() -> None:
    previous = HealthState(levels={"overall": "ok", "ftp": "ok", "mirror": "ok"})
    down = assess(NOW, HOUR, ["ftp"], clean_drift(), [unreachable()], None)
    message = compose(
        Notice.CHANGED, "ópen vz " + "x" * 200, previous, down, "https://m.example/.mirrorkeeper/status.html"
    )
    assert len(message.subject) <= SUBJECT_LIMIT and message.subject.isascii() and "\n" not in message.subject
    assert "DOWN" in message.subject
    assert message.document["changes"]["ftp"] == {"from": "ok", "to": "down"}
    assert "unreachable" in message.text and "status.html" in message.text


def test_each_mirror_has_two_metrics_and_the_host_a_fixed_set_whatever_the_mirrors() -> None:
    # GIVEN two verified mirrors: one fresh, one stale with a failed probe and a new sync report
    fresh = assess(NOW, HOUR, ["http"], clean_drift(), [endpoint(age=120)], None)
    stale_probes = [endpoint(age=9 * HOUR, file=Outcome.WRONG_SIZE)]
    stale = assess(NOW, HOUR, ["http"], clean_drift(), stale_probes, None)
    sync = SyncOutcome(NOW, True, 0, "synced", "run-report", "r1", 12.5, 1000, 7, 20)
    figures = [
        mirror_figures(fresh, clean_drift(), [endpoint(age=120)], sync, None),
        mirror_figures(stale, clean_drift(), stale_probes, sync, sync),
    ]
    # THEN a mirror sends its health level and its stalest protocol's freshness, nothing more
    points = mirror_points("openvz", figures[1])
    assert {(p.name, p.dimensions, p.values) for p in points} == {
        ("HealthLevel", (("Mirror", "openvz"),), (float(Level.DOWN),)),
        ("FreshnessSeconds", (("Mirror", "openvz"),), (9 * HOUR,)),
    }
    # AND the host's figures hold the worst mirror, the sums and the new report's values
    host = {(p.name, p.dimensions): p.values for p in host_points(figures)}
    assert host[("FreshnessSeconds", (("Protocol", "http"),))] == (9 * HOUR,)
    assert host[("ProbesFailed", (("Protocol", "http"),))] == (1.0,)
    assert host[("HealthLevel", ())] == (float(Level.DOWN),) and host[("MirrorsNotOk", ())] == (1.0,)
    assert host[("SyncFilesChanged", ())] == (7.0,)
    assert len(host[("ProbeLatency", (("Protocol", "http"),))]) == 8
    # AND however many mirrors there are, the host's metrics are the same set (their cost is fixed)
    many = host_points(figures * 25)
    assert {(p.name, p.dimensions) for p in many} == set(host)
    assert all("Mirror" not in dict(p.dimensions) for p in many)
    # AND a mirror this run did not check counts as it stood at its last check, aged since: its copy
    # is older by then, its sync was counted then, its latencies belonged to that check
    carried = carried_forward(figures[0], 600.0)
    assert carried["freshness"] == {"http": 720.0} and carried["sync"] is None and carried["latency"] == {}
    assert carried["overall"] == figures[0]["overall"] and carried["failed"] == figures[0]["failed"]
    after_one_mirror_run = {(p.name, p.dimensions): p.values for p in host_points([figures[1], carried])}
    assert after_one_mirror_run[("MirrorsNotOk", ())] == (1.0,)
    assert after_one_mirror_run[("SyncFilesChanged", ())] == (7.0,)  # the new report alone
