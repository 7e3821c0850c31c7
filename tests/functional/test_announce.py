"""`mirrorkeeper announce` as a real subprocess against a stack and a bucket in the moto server."""

import json
from typing import Any

import boto3

from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.manifest import ManifestHeader
from mirrorkeeper.state import ManifestMeta, RunReport, StateStore, SyncResult
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
MIRROR_BYTES, MIRROR_ENTRIES = 25_769_803_776, 12_345


def publish_manifest(s3: Any) -> str:
    """A manifest as a sync publishes it (with its totals); returns when S3 says it was written."""
    state = StateStore(s3, MirrorLayout.create(BUCKET))
    entries = [Entry(f"f{n}", EntryType.FILE, 1, 0) for n in range(3)]
    meta = ManifestMeta("", MIRROR_ENTRIES, MIRROR_BYTES, 0, "20261125T190700Z-abcdef")
    state.put_manifest(state.manifest_key, ManifestHeader("2026-11-25T19:07:41Z", "rsync://u/m/", 3), entries, meta)
    head = s3.head_object(Bucket=BUCKET, Key=state.manifest_key)
    return str(head["LastModified"].strftime("%Y-%m-%dT%H:%M:%SZ"))


def deploy(endpoint: str, s3: Any, published: bool = True) -> str:
    cfn = boto3.client("cloudformation", endpoint_url=endpoint, region_name="us-east-1")
    cfn.create_stack(StackName="mirror", TemplateBody=json.dumps(STACK_TEMPLATE))
    return publish_manifest(s3) if published else ""


def test_announcement_from_the_stack_outputs_and_the_last_sync(s3: Any, endpoint: str) -> None:
    # GIVEN a deployed stack whose AdminContact was left empty, and a published mirror
    published = deploy(endpoint, s3)
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
        "Size": f"24.0 GiB in 12,345 entries (last sync {published})",
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
    assert announcement["size_bytes"] == MIRROR_BYTES


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
    deploy(endpoint, s3, published=False)
    result = run_cli(["announce", "--stack-name", "mirror", "--contact", "a@example.org"], endpoint)
    assert result.returncode == 1
    assert "state/manifest.jsonl.gz does not exist: no sync has published yet" in result.stderr


def test_after_a_failed_run_the_size_is_the_published_mirrors(s3: Any, endpoint: str) -> None:
    # GIVEN a published mirror, then a run that failed (its report knows no size)
    deploy(endpoint, s3)
    failed = RunReport(run_id="x", upstream="rsync://u/m/", started=1.0, finished=2.0, result=SyncResult.FAILED)
    s3.put_object(Bucket=BUCKET, Key="state/runs/last.json", Body=failed.to_bytes())
    # WHEN announced
    result = run_cli(["announce", "--stack-name", "mirror", "--contact", "a@example.org", "--format", "json"], endpoint)
    # THEN the size is what clients can download: the published manifest's
    assert result.returncode == 0, result.stderr
    announcement = json.loads(result.stdout)
    assert (announcement["size_bytes"], announcement["files"]) == (MIRROR_BYTES, MIRROR_ENTRIES)


def test_an_unknown_stack_is_a_configuration_error(s3: Any, endpoint: str) -> None:
    result = run_cli(["announce", "--stack-name", "nope", "--location", "x", "--contact", "a@example.org"], endpoint)
    assert result.returncode == 2
    assert "stack 'nope' could not be read" in result.stderr
