"""The deployed workflow and ``mirrorkeeper verify`` run the same steps in the same order, on the
event shapes in events/ (no network)."""

import json
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper.verify.events import (
    DiffInput,
    EcsTaskStateChange,
    InvalidEventError,
    ProbeInput,
    PublishInput,
    ScheduledVerify,
    StepError,
    parse_event,
)
from mirrorkeeper.verify.workflow import STEPS

REPO = Path(__file__).resolve().parents[2]
DEFINITION = json.loads((REPO / "statemachine" / "verify.asl.json").read_text())
EVENTS = REPO / "events"


def load_event(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def task_states_in_order() -> list[tuple[str, dict[str, Any]]]:
    """Walk the state machine from StartAt along Next, as Step Functions would on success."""
    states, name, seen = DEFINITION["States"], DEFINITION["StartAt"], []
    while True:
        state = states[name]
        if state["Type"] == "Task":
            seen.append((name, state))
        if state.get("End"):
            return seen
        name = state["Next"]


def test_the_state_machine_runs_the_steps_of_mirrorkeeper_verify_in_the_same_order() -> None:
    tasks = task_states_in_order()
    assert [name for name, _ in tasks] == [step.name for step in STEPS]
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


@pytest.mark.parametrize(
    ("sample", "change", "where"),
    [
        ("ecs-task-stopped-failed.json", {"time": "yesterday"}, "trigger.time"),
        ("ecs-task-stopped-failed.json", {"detail-type": "ECS Container Instance State Change"}, "trigger.detail-type"),
        (
            "ecs-task-stopped-failed.json",
            {"detail": {"taskArn": "arn", "lastStatus": "RUNNING"}},
            "trigger.detail.lastStatus",
        ),
    ],
)
def test_a_malformed_envelope_field_is_named_where_it_sits_in_the_event(
    sample: str, change: dict[str, Any], where: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(DiffInput, {"trigger": load_event(sample) | change})
    assert f"({where}: " in str(caught.value)
