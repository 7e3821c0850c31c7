"""A push starting the sync task in ECS, as in the stack, against the moto server's ECS: the push function
(functions/push/app.py, called in process with a function URL event, its secret in Secrets Manager) for a
host of one, and serve-push with --sync-task-definition for a mirror of a host."""

import base64
import copy
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from mirrorkeeper.push.signature import sign
from mirrorkeeper_dev.ecs import SyncTask, sync_task
from tests import asl
from tests.support import BUCKET, cli_env, serve_cli

EVENT = json.loads((asl.REPO / "events" / "push.json").read_text())
SECRET = "the-stacks-push-secret"


def started_tasks(endpoint: str, task: SyncTask) -> list[dict[str, Any]]:
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1")
    arns = ecs.list_tasks(cluster=task.cluster)["taskArns"]
    return ecs.describe_tasks(cluster=task.cluster, tasks=arns)["tasks"] if arns else []  # type: ignore[no-any-return]


def function_url_event(body: bytes, secret: str, path: str = "/push/openvz", binary: bool = False) -> dict[str, Any]:
    """events/push.json, signed now with ``secret`` (a binary body base64-encoded, as the function URL sends it)."""
    event = copy.deepcopy(EVENT)
    stamp = str(int(time.time()))
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["headers"].update(
        {
            "content-length": str(len(body)),
            "x-mirrorkeeper-timestamp": stamp,
            "x-mirrorkeeper-signature": sign(secret.encode(), stamp, body),
        }
    )
    event["body"] = base64.b64encode(body).decode() if binary else body.decode()
    event["isBase64Encoded"] = binary
    return event


@pytest.fixture
def push_function(s3: Any, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, SyncTask]:
    """The push function of a stack whose mirror is 'OpenVZ' (a host of one), its secret in Secrets Manager."""
    task = sync_task(endpoint)
    secrets = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1")
    arn = secrets.create_secret(Name="mk/push", SecretString=SECRET)["ARN"]
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "MIRRORKEEPER_BUCKET": BUCKET,
        "MIRRORKEEPER_PREFIX": "",
        "MIRRORKEEPER_MIRROR_NAME": "OpenVZ",
        "MIRRORKEEPER_PUSH_SECRET": f"secretsmanager:{arn}",
        "POWERTOOLS_SERVICE_NAME": "mirrorkeeper",
        **task.environment(),
    }.items():
        monkeypatch.setenv(name, value)
    return asl.load_handler("push"), task


def test_the_push_function_starts_the_sync_task_once_and_queues_the_rest(
    push_function: tuple[Any, SyncTask], endpoint: str, s3: Any
) -> None:
    handler, task = push_function
    # WHEN an upstream pushes to the function URL
    answer = handler(function_url_event(b'{"nonce": "1"}', SECRET))
    # THEN it answers 202 started, having called RunTask for the sync task with the host's command
    assert answer["statusCode"] == 202 and json.loads(answer["body"])["result"] == "started"
    (started,) = started_tasks(endpoint, task)
    assert started["taskDefinitionArn"] == task.task_definition and started["launchType"] == "FARGATE"
    assert started["overrides"]["containerOverrides"] == [
        {"name": "sync", "command": ["sync"], "environment": [{"name": "MIRRORKEEPER_TRIGGER", "value": "push"}]}
    ]
    assert started["startedBy"] == "mirrorkeeper-push"
    # WHEN more pushes arrive before that task holds its lease (a binary body among them)
    later = [handler(function_url_event(b"\x00\xff" + bytes([i]), SECRET, binary=True)) for i in range(2)]
    # THEN they wait for it: no second task
    assert [json.loads(a["body"])["result"] for a in later] == ["queued", "queued"]
    assert len(started_tasks(endpoint, task)) == 1
    # AND a replayed event, a wrong secret and another mirror's name are refused, starting nothing
    replayed = function_url_event(b'{"nonce": "2"}', SECRET)  # not the first push's: it may share its second
    assert handler(replayed)["statusCode"] == 202  # a fresh signature...
    assert handler(replayed)["statusCode"] == 403  # ...used once only
    assert handler(function_url_event(b"{}", "guess"))["statusCode"] == 401
    assert handler(function_url_event(b"{}", SECRET, path="/push/debian"))["statusCode"] == 404
    assert len(started_tasks(endpoint, task)) == 1


def test_the_push_function_refuses_a_stale_push_with_nothing_started(
    push_function: tuple[Any, SyncTask], endpoint: str
) -> None:
    handler, task = push_function
    stale = function_url_event(b"{}", SECRET)
    stamp = str(int(time.time()) - 3600)
    stale["headers"].update(
        {"x-mirrorkeeper-timestamp": stamp, "x-mirrorkeeper-signature": sign(SECRET.encode(), stamp, b"{}")}
    )
    answer = handler(stale)
    assert answer["statusCode"] == 403
    assert re.match(r"the timestamp is 360[01] s off the endpoint's clock", json.loads(answer["body"])["error"])
    assert started_tasks(endpoint, task) == []


def test_the_sample_event_is_a_function_url_request_refused_as_unsigned_by_this_stack(
    push_function: tuple[Any, SyncTask], endpoint: str, s3: Any
) -> None:
    # events/push.json as `sam local invoke -e` sends it: its signature is made up, so 401 and nothing else
    handler, task = push_function
    answer = handler(copy.deepcopy(EVENT))
    assert answer["statusCode"] == 401 and answer["headers"]["Content-Type"] == "application/json"
    assert json.loads(answer["body"])["status"] == 401
    assert started_tasks(endpoint, task) == [] and "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


def test_serve_push_starts_a_host_mirrors_task_with_its_name(tmp_path: Path, s3: Any, endpoint: str) -> None:
    task = sync_task(endpoint)
    secret = tmp_path / "debian.push"
    secret.write_text("debian secret\n")
    config = tmp_path / "mirrors.toml"
    config.write_text(
        f'bucket = "{BUCKET}"\n[mirrors.debian]\nupstream = "rsync://u.example.org/debian/"\n'
        f'push_secret_file = "{secret}"\n'
    )
    with serve_cli("serve-push", endpoint, "--config", str(config), *task.flags()) as port:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mirrorkeeper",
                "push",
                "--mirror",
                "debian",
                "--secret-file",
                str(secret),
                "--url",
                f"http://127.0.0.1:{port}/",
            ],
            env=cli_env(endpoint),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0 and result.stdout.startswith("202 started"), result.stderr
    (started,) = started_tasks(endpoint, task)
    (override,) = started["overrides"]["containerOverrides"]
    assert override["command"] == ["sync", "--mirror", "debian"]
    network = started["attachments"][0]["details"]
    assert {"name": "subnetId", "value": task.subnet} in network
