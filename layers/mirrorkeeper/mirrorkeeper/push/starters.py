"""Starting a mirror's sync when a push asks: in AWS the sync task (``ecs:RunTask``, the same task
definition the schedule runs, its container told which mirror), on one machine ``mirrorkeeper sync``
as a process of its own."""

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol

from mirrorkeeper.config import PushMirror
from mirrorkeeper.errors import MirrorkeeperError
from mirrorkeeper.s3errors import aws_errors

log = logging.getLogger(__name__)

# Tells the sync what started it (its run report and trace say so); a sync that does not know the
# variable ignores it, as it ignores every MIRRORKEEPER_* variable it does not take.
TRIGGER = {"MIRRORKEEPER_TRIGGER": "push"}


class StartError(MirrorkeeperError):
    """The sync could not be started (ECS refused the task, the process could not be run)."""


class SyncStarter(Protocol):
    def start(self, mirror: PushMirror) -> str:
        """Start ``mirror``'s sync now; what was started, for the log (a task ARN, a process id)."""
        ...


def sync_command(mirror: PushMirror) -> list[str]:
    """The sync's arguments: a mirror of a host is named; a host of one is the whole configuration."""
    return ["sync", "--mirror", mirror.table] if mirror.table else ["sync"]


class EcsSyncStarter:
    """``ecs:RunTask`` of the sync task definition on Fargate, as the schedule runs it (public address
    included: the stack's subnets reach the upstream through an internet gateway, not a NAT)."""

    def __init__(
        self,
        client: Callable[[], Any],
        cluster: str,
        task_definition: str,
        subnets: Sequence[str],
        security_groups: Sequence[str],
        container: str,
    ) -> None:
        self._client = client
        self.cluster, self.task_definition, self.container = cluster, task_definition, container
        self.network = {
            "awsvpcConfiguration": {
                "subnets": list(subnets),
                "securityGroups": list(security_groups),
                "assignPublicIp": "ENABLED",
            }
        }

    def start(self, mirror: PushMirror) -> str:
        with aws_errors("ECS", f"start the sync task of {mirror.name}"):
            response = self._client().run_task(
                cluster=self.cluster,
                taskDefinition=self.task_definition,
                launchType="FARGATE",
                count=1,
                startedBy="mirrorkeeper-push",
                networkConfiguration=self.network,
                overrides={
                    "containerOverrides": [
                        {
                            "name": self.container,
                            "command": sync_command(mirror),
                            "environment": [{"name": name, "value": value} for name, value in TRIGGER.items()],
                        }
                    ]
                },
            )
        if not response.get("tasks"):
            reasons = "; ".join(f"{f.get('reason', '?')} ({f.get('arn', '')})" for f in response.get("failures", []))
            raise StartError(f"ECS started no sync task for {mirror.name}: {reasons or 'no reason given'}")
        return str(response["tasks"][0]["taskArn"])


class ProcessSyncStarter:
    """``python -m mirrorkeeper sync ARGS [--mirror NAME]`` in a session of its own (a Ctrl-C to
    serve-push does not stop a sync half way), its output to ``output``; a thread waits for each so
    none is left a zombie, and logs how it ended."""

    def __init__(self, arguments: Sequence[str], output: IO[Any]) -> None:
        self.arguments, self.output = list(arguments), output

    def start(self, mirror: PushMirror) -> str:
        command = [sys.executable, "-m", "mirrorkeeper", *sync_command(mirror), *self.arguments]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self.output,
                stderr=self.output,
                env={**os.environ, **TRIGGER},
                start_new_session=True,
            )
        except OSError as exc:
            raise StartError(f"cannot run the sync of {mirror.name}: {exc}") from None
        threading.Thread(target=_reap, args=(process, mirror.name), name=f"sync-{process.pid}", daemon=True).start()
        return f"process {process.pid}"


def _reap(process: "subprocess.Popen[bytes]", mirror: str) -> None:
    code = process.wait()
    log.info("the sync a push started ended", extra={"mirror": mirror, "pid": process.pid, "exit_code": code})
