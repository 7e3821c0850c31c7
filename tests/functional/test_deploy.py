"""`make deploy`'s command (mirrorkeeper_dev.deploy) as a real process against the moto server: it runs
the `sam deploy` it is given with the saved answers and the file's parameters, and uploads mirrors.toml
to the stack's bucket once the stack has the file's schedules, and only then. A stand-in for `sam`
(a script) records its command line and creates the stack in moto as CloudFormation would, or leaves it
as it was (a change set declined). The file it uploads is then read from the bucket by the package,
as the deployed tasks and functions read it (MIRRORKEEPER_CONFIG)."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from mirrorkeeper.config import ConfigFile
from tests.support import cli_env

STACK = "mk"
MIRRORS = """
[host]
name = "mirrors.example.org"

[mirrors.openvz]
upstream = "rsync://download.openvz.org/openvz-download/"
interval = "1h"
minute = 7

[mirrors.debian-security]
upstream = "rsync://security.debian.org/debian-security/"
path = "linux/debian-security"
interval = "6h"
paused = true
rsync_password = "secretsmanager:mk/debian-security"
"""
SAVED = 'AlertEmail="mirroradmin@example.org" MirrorSchedules="-"'
# What the stand-in deploys: the template's parameters the command sets, its bucket, its outputs.
# (MirrorSchedules a String: moto describes a CommaDelimitedList's value as a Python list's repr,
# where CloudFormation gives it back as it was given.)
STACK_TEMPLATE = {
    "Parameters": {
        "MirrorSchedules": {"Type": "String", "Default": "-"},
        "SyncIntervalHours": {"Type": "String", "Default": "1"},
        "AlertEmail": {"Type": "String"},
    },
    "Resources": {"MirrorBucket": {"Type": "AWS::S3::Bucket"}},
    "Outputs": {"BucketName": {"Value": {"Ref": "MirrorBucket"}}},
}
# `sam deploy` stand-in: records its arguments; with "deploy", creates or updates the stack with the
# parameters of its --parameter-overrides (the later value of one wins, as in SAM CLI); with
# "decline", changes nothing.
FAKE_SAM = """
import json, shlex, sys
from pathlib import Path
import boto3

args = sys.argv[1:]
Path(sys.argv[0]).with_suffix(".args.json").write_text(json.dumps(args))
if args[0] == "deploy":
    overrides = args[args.index("--parameter-overrides") + 1 :]
    values = dict(pair.split("=", 1) for token in overrides for pair in shlex.split(token))
    cfn = boto3.client("cloudformation")
    parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]
    stacks = [s["StackName"] for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    call = cfn.update_stack if "%(stack)s" in stacks else cfn.create_stack
    call(StackName="%(stack)s", TemplateBody=%(template)r, Parameters=parameters)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout's worth of files: mirrors.toml, samconfig.toml with saved answers, the `sam` stand-in."""
    (tmp_path / "mirrors.toml").write_text(MIRRORS)
    (tmp_path / "samconfig.toml").write_text(
        f'[default.global.parameters]\nstack_name = "{STACK}"\n'
        f"[default.deploy.parameters]\nparameter_overrides = {json.dumps(SAVED)}\n"
    )
    (tmp_path / "sam.py").write_text(FAKE_SAM % {"stack": STACK, "template": json.dumps(STACK_TEMPLATE)})
    return tmp_path


def deploy(project: Path, endpoint: str, *sam: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mirrorkeeper_dev.deploy",
            "--mirrors",
            str(project / "mirrors.toml"),
            "--samconfig",
            str(project / "samconfig.toml"),
            "--",
            sys.executable,
            str(project / "sam.py"),
            *sam,
        ],
        env=cli_env(endpoint),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stack(endpoint: str) -> dict[str, Any]:
    cfn = boto3.client("cloudformation", endpoint_url=endpoint, region_name="us-east-1")
    (found,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
    return {
        "parameters": {p["ParameterKey"]: p["ParameterValue"] for p in found["Parameters"]},
        "bucket": {o["OutputKey"]: o["OutputValue"] for o in found["Outputs"]}["BucketName"],
    }


def test_deploy_gives_the_stack_the_files_schedules_then_uploads_the_file(
    project: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = deploy(project, endpoint, "deploy")
    assert result.returncode == 0, result.stderr
    # sam deploy got the saved answers first and the file's parameters after them, which win
    args = json.loads((project / "sam.args.json").read_text())
    assert args == [
        "deploy",
        "--parameter-overrides",
        SAVED,
        'MirrorSchedules="openvz|ENABLED|cron(7 */1 * * ? *),debian-security|DISABLED|cron(7 */6 * * ? *)"',
        'SyncIntervalHours="6"',
    ]
    deployed = stack(endpoint)
    assert deployed["parameters"]["MirrorSchedules"].startswith("openvz|ENABLED|")
    assert deployed["parameters"]["AlertEmail"] == "mirroradmin@example.org"
    # AND the file is in the stack's bucket, where MIRRORKEEPER_CONFIG names it, as the file was
    url = f"s3://{deployed['bucket']}/state/.host/mirrors.toml"
    assert result.stdout.splitlines()[-1] == f"{project / 'mirrors.toml'} uploaded to {url}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    body = s3.get_object(Bucket=deployed["bucket"], Key="state/.host/mirrors.toml")["Body"].read()
    assert body == (project / "mirrors.toml").read_bytes()
    # which the package reads from there, as the deployed tasks and functions do
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    assert list(ConfigFile.read(url).mirrors) == ["openvz", "debian-security"]


def test_a_stack_without_the_files_schedules_gets_no_file(project: Path, endpoint: str) -> None:
    # GIVEN a host deployed with the file as it was
    assert deploy(project, endpoint, "deploy").returncode == 0
    bucket = stack(endpoint)["bucket"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    before = s3.get_object(Bucket=bucket, Key="state/.host/mirrors.toml")["Body"].read()
    # WHEN a mirror is added, and the change set is declined (sam deploy exits 0, the stack unchanged)
    (project / "mirrors.toml").write_text(MIRRORS + '\n[mirrors.epel]\nupstream = "rsync://dl.example.org/epel/"\n')
    result = deploy(project, endpoint, "decline")
    # THEN the running host keeps the file its schedules were made from, and the command says so
    assert result.returncode == 1
    assert "does not have the schedules of" in result.stderr and "the file was not uploaded" in result.stderr
    assert s3.get_object(Bucket=bucket, Key="state/.host/mirrors.toml")["Body"].read() == before


def test_a_file_the_stack_cannot_run_deploys_nothing(project: Path, endpoint: str) -> None:
    (project / "mirrors.toml").write_text(MIRRORS.replace("mk/debian-security", "other/debian-security"))
    result = deploy(project, endpoint, "deploy")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "names the secret 'other/debian-security'" in result.stderr
    assert not (project / "sam.args.json").exists()  # sam deploy never ran
