"""`mirrorkeeper announce` as a real subprocess against a stack and a bucket in the moto server."""

import json
from typing import Any

import boto3

from mirrorkeeper.state import RunReport, SyncResult
from tests.support import BUCKET, run_cli

# The outputs template.yaml gives the command (names and shapes as deployed).
STACK_TEMPLATE = {
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    "Outputs": {
        "MirrorName": {"Value": "openvz"},
        "UpstreamUrl": {"Value": "rsync://download.openvz.org/openvz-download/"},
        "HttpUrl": {"Value": "https://d111111abcdef8.cloudfront.net/"},
        "FtpUrl": {"Value": "ftp://203.0.113.7/"},
        "BucketName": {"Value": BUCKET},
        "SyncIntervalSeconds": {"Value": "3600"},
        "SyncSchedule": {"Value": "cron(7 */1 * * ? *)"},
        "StatusPageUrl": {"Value": "https://d111111abcdef8.cloudfront.net/.mirrorkeeper/status.html"},
        "MirrorLocation": {"Value": "Germany, Hesse, Frankfurt"},
        "AdminContact": {"Value": ""},
    },
}
# The last sync's report, as the sync writes it (finished 2026-11-25T19:07:41Z).
LAST_RUN = RunReport(
    run_id="20261125T190700Z-abcdef",
    upstream="rsync://download.openvz.org/openvz-download/",
    started=1_795_633_620.0,
    finished=1_795_633_661.0,
    result=SyncResult.SUCCESS,
    exit_code=0,
    mirror_bytes=25_769_803_776,
    mirror_entries=12_345,
)


def deploy(endpoint: str, s3: Any, with_report: bool = True) -> None:
    cfn = boto3.client("cloudformation", endpoint_url=endpoint, region_name="us-east-1")
    cfn.create_stack(StackName="mirror", TemplateBody=json.dumps(STACK_TEMPLATE))
    if with_report:
        s3.put_object(Bucket=BUCKET, Key="state/runs/last.json", Body=LAST_RUN.to_bytes())


def test_announcement_from_the_stack_outputs_and_the_last_sync(s3: Any, endpoint: str) -> None:
    # GIVEN a deployed stack whose AdminContact was left empty, and a finished sync
    deploy(endpoint, s3)
    # WHEN announced with the contact given on the command line
    result = run_cli(["announce", "--stack-name", "mirror", "--contact", "mirroradmin@example.org"], endpoint)
    # THEN every item the OpenVZ guide asks for is there, from the stack and the report
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert {k: v.strip() for k, v in lines.items()} == {
        "Mirror": "openvz (of rsync://download.openvz.org/openvz-download/)",
        "Location": "Germany, Hesse, Frankfurt",
        "Updates": "hourly, schedule cron(7 */1 * * ? *)",
        "HTTP": "https://d111111abcdef8.cloudfront.net/",
        "FTP": "ftp://203.0.113.7/",
        "Size": "24.0 GiB in 12,345 entries (last sync 2026-11-25T19:07:41Z)",
        "Admin contact": "mirroradmin@example.org",
        "Status page": "https://d111111abcdef8.cloudfront.net/.mirrorkeeper/status.html",
    }


def test_flags_and_environment_win_over_the_stack_and_json_is_offered(s3: Any, endpoint: str) -> None:
    deploy(endpoint, s3)
    result = run_cli(
        ["announce", "--stack-name", "mirror", "--format", "json", "--sync-interval", "2h", "--location", "Oslo"],
        endpoint,
        {"MIRRORKEEPER_CONTACT": "ops@example.org", "MIRRORKEEPER_RSYNC_URL": "rsync://mirror.example.org/openvz/"},
    )
    assert result.returncode == 0, result.stderr
    announcement = json.loads(result.stdout)
    assert announcement["update_frequency"] == "every 2 hours"
    assert announcement["location"] == "Oslo" and announcement["contact"] == "ops@example.org"
    assert announcement["rsync_url"] == "rsync://mirror.example.org/openvz/"
    assert announcement["size_bytes"] == LAST_RUN.mirror_bytes


def test_missing_inputs_are_named_with_where_to_give_them(s3: Any, endpoint: str) -> None:
    # WHEN nothing but a URL is given
    result = run_cli(["announce", "--http-url", "https://mirror.example.org/"], endpoint)
    # THEN exit 2 with one line naming each missing item and its flag
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    for needed in ("--location", "--contact", "--sync-interval", "--bucket"):
        assert needed in message, needed
    assert "--http-url" not in message


def test_a_mirror_that_never_synced_cannot_be_announced_yet(s3: Any, endpoint: str) -> None:
    deploy(endpoint, s3, with_report=False)
    result = run_cli(["announce", "--stack-name", "mirror", "--contact", "a@example.org"], endpoint)
    assert result.returncode == 1
    assert "state/runs/last.json does not exist: no sync has finished yet" in result.stderr


def test_an_unknown_stack_is_a_configuration_error(s3: Any, endpoint: str) -> None:
    result = run_cli(["announce", "--stack-name", "nope", "--location", "x", "--contact", "a@example.org"], endpoint)
    assert result.returncode == 2
    assert "stack 'nope' could not be read" in result.stderr
