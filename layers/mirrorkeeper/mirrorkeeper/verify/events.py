"""The verify workflow's event shapes: what triggers it, and what each step hands the next.

Both triggers are EventBridge events, modelled on Powertools' ``EventBridgeModel`` with their own
``detail``. A malformed event is an :class:`InvalidEventError` naming the field, which the state
machine does not retry. ``events/*.json`` holds a sample of each trigger and step input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field

from mirrorkeeper.errors import ConfigError
from mirrorkeeper.verify.drift import DriftReport
from mirrorkeeper.verify.health import StepFailure
from mirrorkeeper.verify.probes import EndpointReport


class InvalidEventError(ConfigError):
    """The event does not have the shape this step expects; the message names the field."""


_CONFIG = ConfigDict(populate_by_name=True, extra="ignore")


class _Model(BaseModel):
    model_config = _CONFIG


class EcsContainer(_Model):
    name: str = ""
    exitCode: int | None = None  # noqa: N815 - ECS's field name
    reason: str = ""


class EcsContainerOverride(_Model):
    name: str = ""
    command: list[str] = Field(default_factory=list)


class EcsOverrides(_Model):
    containerOverrides: list[EcsContainerOverride] = Field(default_factory=list)  # noqa: N815


class EcsTaskDetail(_Model):
    taskArn: str  # noqa: N815
    lastStatus: Literal["STOPPED"]  # noqa: N815
    stoppedReason: str = ""  # noqa: N815
    stopCode: str = ""  # noqa: N815
    stoppedAt: datetime | None = None  # noqa: N815
    containers: list[EcsContainer] = Field(default_factory=list)
    overrides: EcsOverrides | None = None

    @property
    def mirror(self) -> str | None:
        """The mirror the task synced (its schedule runs ``sync --mirror NAME``); None for another command."""
        for override in self.overrides.containerOverrides if self.overrides else ():
            command = override.command
            if "--mirror" in command[:-1]:
                return command[command.index("--mirror") + 1]
        return None


class EcsTaskStateChange(EventBridgeModel):
    """EventBridge's ECS Task State Change event for the sync task, filtered to STOPPED."""

    model_config = _CONFIG
    source: Literal["aws.ecs"]
    detail_type: Literal["ECS Task State Change"] = Field(alias="detail-type")
    detail: EcsTaskDetail


class ScheduledVerify(EventBridgeModel):
    """The verify schedule's input (and what ``mirrorkeeper verify`` sends by default).

    The schedule's input in template.yaml carries only source, detail-type, id and time; the
    defaults stand in for the rest, so a deployed schedule's event validates as it is.
    """

    model_config = _CONFIG
    source: Literal["mirrorkeeper.schedule", "mirrorkeeper.cli"]
    version: str = "0"
    account: str = ""
    region: str = ""
    resources: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)


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
    mirror: str = ""  # the mirror of a host this check is for ('' for a host of one)


class ProbeInput(_Model):
    trigger: Trigger
    mirror: str = ""


class PublishInput(_Model):
    trigger: Trigger
    mirror: str = ""
    # StepError first: every DriftReport field has a default, so any object would pass as one.
    drift: StepError | DriftReport = Field(union_mode="left_to_right")
    probes: StepError | ProbeRun = Field(union_mode="left_to_right")


class ListInput(_Model):
    trigger: Trigger
    only: str = ""  # one mirror to check (mirrorkeeper verify --mirror NAME), else as the trigger says


class MirrorResult(_Model):
    """What one mirror's checks hand the host's step: its name and its publish-health result (or the
    error that step ended with)."""

    mirror: str = ""
    health: dict[str, Any] = Field(default_factory=dict)


class HostInput(_Model):
    trigger: Trigger
    results: list[MirrorResult] = Field(default_factory=list)


# Pydantic puts the discriminator's value in an error's location (trigger.aws.ecs.detail...), a
# key no event has; the message names fields as they are written in the event.
_TRIGGER_TAGS = frozenset(
    tag
    for member in (EcsTaskStateChange, ScheduledVerify)
    for tag in get_args(member.model_fields["source"].annotation)
)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if part not in _TRIGGER_TAGS) or "event"


def parse_event[M: BaseModel](model: type[M], event: Any) -> M:
    # A bad event reaches us from parse() as pydantic's ValidationError; Powertools' own
    # InvalidModelTypeError means one of the models here is broken, not the event, so it propagates.
    try:
        return parse(event, model)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in exc.errors()[:5])
        raise InvalidEventError(
            f"the {model.__name__} event is malformed ({problems}); compare it with the samples in events/"
        ) from None
