"""The deployed workflow and ``mirrorkeeper verify`` run the same steps in the same order, on the
event shapes in events/ (no network)."""

import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

from mirrorkeeper.config import AwsConfig
from mirrorkeeper.verify.alerts import SnsNotifier
from mirrorkeeper.verify.events import (
    DiffInput,
    EcsTaskStateChange,
    HostInput,
    InvalidEventError,
    ListInput,
    ProbeInput,
    PublishInput,
    ScheduledVerify,
    StepError,
    parse_event,
)
from mirrorkeeper.verify.metrics import CloudWatchSink
from mirrorkeeper.verify.workflow import MAP_CONCURRENCY, STEPS, HostDeps, cli_trigger

REPO = Path(__file__).resolve().parents[2]
DEFINITION = json.loads((REPO / "statemachine" / "verify.asl.json").read_text())
EVENTS = REPO / "events"


def load_event(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def states_in_order(machine: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Walk a state machine (or a Map's item processor) from StartAt along Next, as Step Functions
    would on success."""
    states, name, seen = machine["States"], machine["StartAt"], []
    while True:
        state = states[name]
        seen.append((name, state))
        if state.get("End"):
            return seen
        name = state["Next"]


def test_the_host_steps_frame_a_map_over_the_mirrors() -> None:
    top = states_in_order(DEFINITION)
    assert [(name, state["Type"]) for name, state in top] == [
        ("Trigger", "Pass"),
        ("ListMirrors", "Task"),
        ("CheckMirrors", "Map"),
        ("PublishHost", "Task"),
    ]
    listing, checks, host = (state for _, state in top[1:])
    assert listing["Resource"] == "${ListMirrorsFunctionArn}" and host["Resource"] == "${PublishHostFunctionArn}"
    assert checks["ItemsPath"] == "$." + listing["ResultPath"].removeprefix("$.") + ".mirrors"
    assert checks["MaxConcurrency"] == MAP_CONCURRENCY
    assert checks["ItemSelector"] == {"trigger.$": "$.trigger", "mirror.$": "$$.Map.Item.Value.mirror"}
    assert host["Parameters"] == {"trigger.$": "$.trigger", "results.$": checks["ResultPath"]}
    # Neither host step is caught: a host that cannot list its mirrors or publish fails the execution.
    assert "Catch" not in listing and "Catch" not in host


def test_each_mirrors_checks_run_the_steps_of_mirrorkeeper_verify_in_the_same_order() -> None:
    processor = DEFINITION["States"]["CheckMirrors"]["ItemProcessor"]
    walked = states_in_order(processor)
    tasks = [(name, state) for name, state in walked if state["Type"] == "Task"]
    assert [name for name, _ in tasks] == [step.name for step in STEPS]
    # The item's result is what publish-host reads: the mirror and its health (or the error).
    last = walked[-1][1]
    assert last["Type"] == "Pass" and last["Parameters"] == {"mirror.$": "$.mirror", "health.$": "$.health"}
    for (name, state), step in zip(tasks, STEPS, strict=True):
        assert state["Resource"] == "${" + name + "FunctionArn}"
        assert state["ResultPath"] == "$." + step.result_key
        catches = state.get("Catch", [])
        # A recorded failure lands where the step's result would, and the chain goes on.
        assert bool(catches) is step.recorded_on_failure
        for catch in catches:
            assert catch["ResultPath"] == state["ResultPath"] and catch["Next"] == state["Next"]
        # Only Lambda's own transient errors are retried: a malformed event must not loop.
        for retry in state.get("Retry", []):
            assert all(error.startswith("Lambda.") for error in retry["ErrorEquals"])


def test_the_health_kept_per_mirror_is_what_publish_host_reads() -> None:
    publish = DEFINITION["States"]["CheckMirrors"]["ItemProcessor"]["States"]["PublishHealth"]
    assert set(publish["ResultSelector"]) == {"overall.$", "figures.$", "notice.$"}
    parsed = parse_event(HostInput, load_event("publish-host.json"))
    assert {key for result in parsed.results for key in result.health} == {"overall", "figures", "notice"}


def test_the_trigger_is_kept_under_trigger_like_the_local_runner_does() -> None:
    first = DEFINITION["States"][DEFINITION["StartAt"]]
    assert first["Type"] == "Pass" and first["Parameters"] == {"trigger.$": "$"}


@pytest.mark.parametrize("name", sorted(p.name for p in EVENTS.glob("ecs-task-stopped-*.json")))
def test_every_ecs_sample_event_parses_as_a_trigger(name: str) -> None:
    parsed = parse_event(DiffInput, {"trigger": load_event(name)})
    assert isinstance(parsed.trigger, EcsTaskStateChange)
    assert parsed.trigger.detail.lastStatus == "STOPPED"


def test_step_inputs_in_events_parse() -> None:
    assert isinstance(parse_event(DiffInput, load_event("diff-manifests.json")).trigger, ScheduledVerify)
    assert isinstance(parse_event(ProbeInput, load_event("probe-endpoints.json")).trigger, ScheduledVerify)
    published = parse_event(PublishInput, load_event("publish-health.json"))
    assert not isinstance(published.drift, StepError) and not isinstance(published.probes, StepError)
    assert published.probes.endpoints and published.probes.endpoints[0].results
    assert isinstance(parse_event(ListInput, load_event("list-mirrors.json")).trigger, ScheduledVerify)
    assert [r.mirror for r in parse_event(HostInput, load_event("publish-host.json")).results] == ["debian", "openvz"]


def test_a_recorded_step_failure_is_told_apart_from_a_report() -> None:
    event = load_event("publish-health.json") | {"drift": {"Error": "StorageError", "Cause": "S3 refused"}}
    parsed = parse_event(PublishInput, event)
    assert isinstance(parsed.drift, StepError) and parsed.drift.failure().cause == "S3 refused"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({}, "trigger"),
        ({"trigger": {"source": "aws.s3"}}, "trigger"),
        ({"trigger": load_event("ecs-task-stopped-failed.json") | {"detail": {"lastStatus": "RUNNING"}}}, "detail"),
        ({"trigger": load_event("scheduled-verify.json"), "drift": {}, "probes": "nope"}, "probes"),
        ([1, 2], "event"),
    ],
)
def test_malformed_events_name_the_field(event: Any, field: str) -> None:
    model = PublishInput if isinstance(event, dict) and "drift" in event else DiffInput
    with pytest.raises(InvalidEventError) as caught:
        parse_event(model, event)
    assert field in str(caught.value) and "events/" in str(caught.value)


# Every field of an EventBridge event as EventBridge writes it (replay-name only on a replay).
ENVELOPE = {f.alias or name for name, f in EventBridgeModel.model_fields.items()} - {"replay-name"}


def test_both_triggers_are_powertools_eventbridge_models() -> None:
    assert issubclass(EcsTaskStateChange, EventBridgeModel) and issubclass(ScheduledVerify, EventBridgeModel)


def test_a_real_ecs_event_keeps_every_envelope_field() -> None:
    event = load_event("ecs-task-stopped-success.json") | {"replay-name": "after-outage"}
    assert set(event) >= ENVELOPE
    parsed = parse_event(DiffInput, {"trigger": event}).trigger
    assert isinstance(parsed, EcsTaskStateChange)
    assert (parsed.version, parsed.account, parsed.region) == ("0", "123456789012", "us-east-1")
    assert parsed.resources == [parsed.detail.taskArn] and parsed.replay_name == "after-outage"
    assert parsed.time.isoformat() == "2026-11-25T14:07:41+00:00"


@pytest.mark.parametrize("name", sorted(ENVELOPE - {"source"}))  # without source, no trigger matches
def test_the_ecs_event_needs_every_envelope_field(name: str) -> None:
    event = {k: v for k, v in load_event("ecs-task-stopped-success.json").items() if k != name}
    with pytest.raises(InvalidEventError, match=rf"\(trigger\.{name}: Field required\)"):
        parse_event(DiffInput, {"trigger": event})


@pytest.mark.parametrize(
    ("sample", "change", "where"),
    [
        ("ecs-task-stopped-failed.json", {"time": "yesterday"}, "trigger.time"),
        ("ecs-task-stopped-failed.json", {"detail-type": "ECS Container Instance State Change"}, "trigger.detail-type"),
        (
            "ecs-task-stopped-failed.json",
            {"resources": "arn:aws:ecs:us-east-1:123456789012:task/x"},
            "trigger.resources",
        ),
        (
            "ecs-task-stopped-failed.json",
            {"detail": {"taskArn": "arn", "lastStatus": "RUNNING"}},
            "trigger.detail.lastStatus",
        ),
        ("scheduled-verify.json", {"time": "<aws.scheduler.scheduled-time>"}, "trigger.time"),
        ("scheduled-verify.json", {"detail": "{}"}, "trigger.detail"),
    ],
)
def test_a_malformed_envelope_field_is_named_where_it_sits_in_the_event(
    sample: str, change: dict[str, Any], where: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(DiffInput, {"trigger": load_event(sample) | change})
    assert f"({where}: " in str(caught.value)


def test_the_schedules_event_validates_with_what_it_does_not_carry_filled_in() -> None:
    event = load_event("scheduled-verify.json")
    parsed = parse_event(DiffInput, {"trigger": event}).trigger
    assert isinstance(parsed, ScheduledVerify) and parsed.id == event["id"]
    assert (parsed.version, parsed.account, parsed.region, parsed.resources, parsed.detail) == ("0", "", "", [], {})


def test_the_command_lines_trigger_is_a_complete_scheduled_verify_event() -> None:
    event = cli_trigger(1795634644.5)
    assert set(event) == ENVELOPE
    parsed = parse_event(ScheduledVerify, event)
    assert parsed.source == "mirrorkeeper.cli" and parsed.time.timestamp() == 1795634644
    assert parse_event(ScheduledVerify, cli_trigger(1795634644.5)).id != parsed.id


def test_every_mirror_of_a_host_checks_with_the_hosts_clients(tmp_path: Path) -> None:
    # GIVEN a host of two mirrors reaching AWS the same way
    config = tmp_path / "mirrors.toml"
    config.write_text(
        '[host]\nbucket = "mirrors"\nendpoint_url = "http://127.0.0.1:9"\n\n[mirrors.one]\nupstream = "rsync://h/one/"\n'
        '\n[mirrors.two]\nupstream = "rsync://h/two/"\n'
    )
    flags = {"config": str(config), "http_url": "http://127.0.0.1:9/", "topic_arn": "arn:aws:sns:us-east-1:1:t"}
    deps = HostDeps.load(flags, "cloudwatch", environ={})
    one, two = deps.mirror("one"), deps.mirror("two")
    # THEN each mirror's checks use the host's one client per service: building one loads its model
    assert one.s3 is two.s3 is deps.host.s3
    assert isinstance(one.metrics, CloudWatchSink) and isinstance(two.metrics, CloudWatchSink)
    assert one.metrics.client is two.metrics.client
    assert isinstance(one.notifier, SnsNotifier) and isinstance(two.notifier, SnsNotifier)
    assert one.notifier.client is two.notifier.client
    # AND a different way to AWS gets a client of its own
    other = AwsConfig(endpoint_url="http://127.0.0.1:10", region="us-east-1")
    assert deps.clients.s3(other) is not one.s3
