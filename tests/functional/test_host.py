"""A mirror host: two mirrors from two modules of one real rsync daemon, synced by the real CLI into
one bucket on the moto server, each under its path; `mirrorkeeper mirrors` lists them."""

import ftplib
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest

from mirrorkeeper.aws import RequestCounter, s3_client
from mirrorkeeper.config import AwsConfig, SyncConfig
from mirrorkeeper.errors import HealthNotPublishedError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.sync.run import SyncRun
from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import openvz_like, write_file
from tests import asl
from tests.functional.test_invalidation import distribution, recorded
from tests.support import BUCKET, cli_env, run_cli, serve_cli, served_objects


@pytest.fixture
def host(tmp_path: Path, s3: Any) -> Any:
    openvz, debian = tmp_path / "openvz", tmp_path / "debian"
    openvz_like(openvz)
    write_file(debian / "dists/stable/Release", b"Suite: stable\n", 1_700_000_000)
    write_file(debian / "pool/main/a_1_all.deb", b"deb", 1_700_000_000)
    write_file(debian / "pool/main/partial.tmp", b"tmp", 1_700_000_000)
    daemon = RsyncDaemon(openvz, module="openvz", more={"debian": debian}).start()
    config = tmp_path / "mirrors.toml"

    def write(extra: str = "") -> Path:
        config.write_text(
            f"""[host]
name = "mirrors.test"
bucket = "{BUCKET}"

[mirrors.openvz]
upstream = "{daemon.url_of("openvz")}"
path = "openvz"
interval = "1h"
minute = 7

[mirrors.debian]
upstream = "{daemon.url_of("debian")}"
exclude = ["*.tmp"]
interval = "6h"
{extra}"""
        )
        return config

    yield write, daemon, openvz, debian
    daemon.stop()


def files_of(s3: Any, prefix: str) -> dict[str, bytes]:
    return {k: v["body"] for k, v in served_objects(s3, prefix=prefix).items() if k and not k.endswith("/")}


def test_sync_all_puts_each_mirror_under_its_path_with_its_own_state(host: Any, s3: Any, endpoint: str) -> None:
    write, _daemon, _openvz, _debian = host
    # WHEN every mirror of the host syncs
    result = run_cli(["sync", "--config", str(write()), "--all"], endpoint)
    # THEN each is served under its path, with its own trace, and its excludes applied
    assert result.returncode == 0, result.stderr
    summaries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(s["mirror"], s["result"]) for s in summaries] == [("openvz", "success"), ("debian", "success")]
    debian_files = files_of(s3, "pub/debian/")
    assert debian_files.keys() == {"dists/stable/Release", "pool/main/a_1_all.deb", ".mirrorkeeper/trace"}
    assert ".mirrorkeeper/trace" in files_of(s3, "pub/openvz/") and "README" in files_of(s3, "pub/openvz/")
    # AND each has its own private state, never inside a served tree
    state = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="state/")["Contents"]}
    assert {"state/openvz/manifest.jsonl.gz", "state/debian/manifest.jsonl.gz"} <= state
    assert not any(k.startswith("pub/") and "manifest" in k for k in files_of(s3, "pub/"))


def test_a_failing_mirror_never_stops_the_others_and_sets_the_exit_code(host: Any, s3: Any, endpoint: str) -> None:
    write, *_ = host
    # GIVEN a third mirror whose upstream module does not exist
    config = write('\n[mirrors.gone]\nupstream = "rsync://127.0.0.1:1/nothing/"\n')
    # WHEN every mirror syncs
    result = run_cli(["sync", "--config", str(config), "--all"], endpoint)
    # THEN the others sync, the broken one fails alone, and the exit code is the most serious
    assert result.returncode == 1
    results = {json.loads(line)["mirror"]: json.loads(line)["result"] for line in result.stdout.splitlines()}
    assert results == {"openvz": "success", "debian": "success", "gone": "failed"}
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("mirrorkeeper sync: gone: error: cannot list rsync://127.0.0.1:1/nothing/")
    assert lines[-1].startswith("mirrorkeeper sync: 1 of 3 mirrors did not sync cleanly (gone exit 1)")
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="state/gone/runs/last.json")["Body"].read())
    assert report["exit_code"] == 1 and report["result"] == "failed"


def test_a_paused_mirror_is_left_alone_by_all(host: Any, s3: Any, endpoint: str) -> None:
    write, *_ = host
    config = write("paused = true\n")  # the debian table's last key
    result = run_cli(["sync", "--config", str(config), "--all"], endpoint)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"mirror": "debian", "result": "paused"}
    assert files_of(s3, "pub/debian/") == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--all", "--upstream", "rsync://h/m/"], "--upstream (MIRRORKEEPER_UPSTREAM) names one mirror"),
        ([], "has mirrors (openvz, debian): name one with --mirror NAME, or --all"),
        (["--mirror", "centos"], "no mirror 'centos'"),
    ],
)
def test_asking_for_no_mirror_or_an_unknown_one_is_a_usage_error(
    host: Any, endpoint: str, args: list[str], message: str
) -> None:
    write, *_ = host
    result = run_cli(["sync", "--config", str(write()), *args], endpoint)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_host_file_syncs_nothing(host: Any, s3: Any, endpoint: str) -> None:
    write, *_ = host
    config = write('colour = "red"\n')
    result = run_cli(["sync", "--config", str(config), "--all"], endpoint)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("[mirrors.debian] unknown key 'colour'")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


def test_mirrors_lists_each_mirror_with_tunasyncs_fields(host: Any, s3: Any, endpoint: str) -> None:
    write, *_ = host
    config = write()
    assert run_cli(["sync", "--config", str(config), "--mirror", "openvz"], endpoint).returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "mirrorkeeper", "mirrors", "--config", str(config), "--json"],
        env=cli_env(endpoint),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed = {m["name"]: m for m in json.loads(result.stdout)}
    tunasync = {"name", "is_master", "status", "last_update", "last_update_ts", "last_ended", "last_ended_ts"}
    assert tunasync | {"upstream", "size", "next_schedule_ts"} <= listed["openvz"].keys()
    assert listed["openvz"]["status"] == "success" and listed["openvz"]["last_update_ts"] > 0
    assert listed["openvz"]["next_schedule_ts"] % 3600 == 7 * 60
    assert listed["debian"]["status"] == "failed" and listed["debian"]["last_ended_ts"] == 0  # never synced
    table = run_cli(["mirrors", "--config", str(config)], endpoint)
    assert table.returncode == 0 and table.stdout.splitlines()[1].split()[:3] == ["openvz", "/openvz/", "success"]


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_verify_checks_every_mirror_and_the_front_page_lists_them(host: Any, s3: Any, endpoint: str) -> None:
    write, *_ = host
    # GIVEN a host of three mirrors, one of whose upstream is gone, synced and served over HTTP and FTP
    config = write('\n[mirrors.gone]\nupstream = "rsync://127.0.0.1:1/nothing/"\n')
    assert run_cli(["sync", "--config", str(config), "--all"], endpoint).returncode == 1
    sns, sqs = (boto3.client(name, endpoint_url=endpoint, region_name="us-east-1") for name in ("sns", "sqs"))
    topic = sns.create_topic(Name="host-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="host-alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    with serve_cli("serve-http", endpoint) as http_port, serve_cli("serve-ftp", endpoint) as ftp_port:
        http = f"http://127.0.0.1:{http_port}/"
        urls = ["--http-url", http, "--ftp-url", f"ftp://127.0.0.1:{ftp_port}/"]
        # WHEN verify runs over the host
        result = run_cli(["verify", "--config", str(config), *urls, "--topic-arn", topic, "--json"], endpoint)
        # THEN every mirror is checked under its own path, and only the broken one is not ok (exit 1)
        assert result.returncode == 1, result.stderr
        document = json.loads(result.stdout)
        overall = {state["mirror"]: state["health"]["overall"] for state in document["mirrors"]}
        findings = {state["mirror"]: state["health"]["findings"] for state in document["mirrors"]}
        assert overall == {"openvz": "ok", "debian": "ok", "gone": "degraded"}, findings  # gone: never published
        assert document["host"]["not_ok"] == ["gone"]
        # AND the one alert names the mirror that changed level, and points at its own status page
        (alert,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
        envelope = json.loads(alert["Body"])
        assert "gone" in envelope["Subject"] and "DEGRADED" in envelope["Subject"]
        assert f"{http}gone/.mirrorkeeper/status.html" in envelope["Message"]
        probed = {e["url"] for s in document["mirrors"] if s["mirror"] == "debian" for e in s["probes"]["endpoints"]}
        assert probed == {http + "debian/", f"ftp://127.0.0.1:{ftp_port}/debian/"}
        # AND the front page lists them, linking the published ones, with no script (only JSON data)
        status, page = http_get(http)
        assert status == 200 and set(re.findall(rb"<script[^>]*>", page)) == {
            b'<script type="application/json" id="mirrorkeeper-entries">'
        }
        assert b'href="/openvz/"' in page and b'href="/debian/"' in page and b'href="/gone/"' not in page
        assert b'data-mirror="gone"' in page
        # AND mirrors.json carries tunasync's fields for tools
        status, body = http_get(http + ".mirrorkeeper/mirrors.json")
        listed = {m["name"]: m for m in json.loads(body)}
        assert status == 200 and {n: m["status"] for n, m in listed.items()} == {
            "openvz": "success",
            "debian": "success",
            "gone": "failed",
        }
        assert listed["debian"]["upstream"].endswith("/debian/") and listed["openvz"]["last_update_ts"] > 0
        # AND each mirror keeps its own status page under its path
        assert http_get(http + "openvz/.mirrorkeeper/status.html")[0] == 200
        assert b"debian" in http_get(http + "debian/.mirrorkeeper/status.json")[1]
        # AND an FTP client lists the published mirrors at the root
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", ftp_port, timeout=10)
            ftp.login()
            assert {"openvz", "debian"} <= set(ftp.nlst())
            # (the broken mirror's directory holds its status page alone)
            assert ftp.nlst("gone") in (["gone/.mirrorkeeper"], [".mirrorkeeper"])
        # WHEN verify is asked for one mirror THEN it checks that one alone
        one = run_cli(["verify", "--config", str(config), *urls, "--mirror", "debian", "--json"], endpoint)
        assert one.returncode == 0, one.stderr
        assert [state["mirror"] for state in json.loads(one.stdout)["mirrors"]] == ["debian"]


def test_a_mirror_of_a_host_invalidates_under_its_path_and_serve_http_follows_it(
    host: Any, s3: Any, endpoint: str
) -> None:
    write, _daemon, _openvz, debian = host
    cloudfront, distribution_id = distribution(endpoint)
    config = write()
    given = ["--config", str(config), "--cloudfront-distribution-id", distribution_id]
    assert run_cli(["sync", *given, "--all"], endpoint).returncode == 0
    serve = ["--config", str(config), "--cache-ttl", "3600", "--invalidation-poll", "0.2"]
    with serve_cli("serve-http", endpoint, *serve) as port:
        release = f"http://127.0.0.1:{port}/debian/dists/stable/Release"
        assert http_get(release) == (200, b"Suite: stable\n")  # now cached for an hour
        # WHEN upstream rewrites a file in place and the mirror syncs again
        write_file(debian / "dists/stable/Release", b"Suite: stable\nVersion: 2\n", 1_700_000_100)
        assert run_cli(["sync", *given, "--mirror", "debian"], endpoint).returncode == 0
        # THEN CloudFront was told the path under the mirror's own directory, and nothing outside it
        paths = [p for i in recorded(cloudfront, distribution_id) for p in i["InvalidationBatch"]["Paths"]["Items"]]
        assert "/debian/dists/stable/Release" in paths and all(p.startswith("/debian/") for p in paths), paths
        # AND serve-http, following that mirror's record, serves the new copy despite its long TTL
        time.sleep(0.3)
        assert http_get(release) == (200, b"Suite: stable\nVersion: 2\n")


def test_announce_speaks_for_one_mirror_under_its_path(host: Any, s3: Any, endpoint: str) -> None:
    write, *_ = host
    config = write()
    assert run_cli(["sync", "--config", str(config), "--all"], endpoint).returncode == 0
    urls = ["--http-url", "https://mirrors.test/", "--ftp-url", "ftp://mirrors.test/", "--contact", "ops@mirrors.test"]
    urls += ["--location", "Oslo, Norway"]
    # WHEN the debian mirror is announced to its upstream project
    result = run_cli(["announce", "--config", str(config), "--mirror", "debian", *urls, "--format", "json"], endpoint)
    assert result.returncode == 0, result.stderr
    announcement = json.loads(result.stdout)
    # THEN every URL is the mirror's, under its path, with its own schedule and size
    assert announcement["http_url"] == "https://mirrors.test/debian/"
    assert announcement["ftp_url"] == "ftp://mirrors.test/debian/"
    assert announcement["status_url"] == "https://mirrors.test/debian/.mirrorkeeper/status.html"
    assert announcement["update_frequency"] == "every 6 hours" and announcement["location"] == "Oslo, Norway"
    assert announcement["size_bytes"] == len(b"Suite: stable\n") + len(b"deb")
    # AND a host asked for no mirror says which to name, since each project lists its own mirror
    unnamed = run_cli(["announce", "--config", str(config), *urls], endpoint)
    assert unnamed.returncode == 2 and "openvz, debian" in unnamed.stderr and "--mirror" in unnamed.stderr


def test_the_deployed_workflow_checks_the_mirror_whose_sync_stopped_and_fails_only_after_publishing(
    host: Any, s3: Any, endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write, *_ = host
    config = write()
    assert run_cli(["sync", "--config", str(config), "--all"], endpoint).returncode == 0
    with serve_cli("serve-http", endpoint) as http_port, serve_cli("serve-ftp", endpoint) as ftp_port:
        # GIVEN the functions' environment as the stack sets it, the host's config file named in it
        for name, value in {
            "MIRRORKEEPER_CONFIG": str(config),
            "MIRRORKEEPER_HTTP_URL": f"http://127.0.0.1:{http_port}/",
            "MIRRORKEEPER_FTP_URL": f"ftp://127.0.0.1:{ftp_port}/",
            "AWS_ENDPOINT_URL": endpoint,
            "POWERTOOLS_SERVICE_NAME": "mirrorkeeper",
        }.items():
            monkeypatch.setenv(name, value)
        workflow = asl.deployed_workflow()
        # WHEN the debian mirror's sync task stops (its schedule ran `sync --mirror debian`)
        stopped = json.loads((asl.REPO / "events" / "ecs-task-stopped-success.json").read_text())
        stopped["detail"]["overrides"] = {
            "containerOverrides": [{"name": "sync", "command": ["sync", "--mirror", "debian"]}]
        }
        done = asl.execute(workflow, stopped)
        # THEN only that mirror is checked
        assert [r["mirror"] for r in done["results"]] == ["debian"] and done["host"]["not_ok"] == []
        # WHEN a scheduled run's publish-health fails for one mirror (its Lambda crashed)
        publish = workflow.handlers["PublishHealth"]

        def crash_for_openvz(event: dict[str, Any]) -> Any:
            if event["mirror"] == "openvz":
                raise RuntimeError("Lambda crashed")
            return publish(event)

        workflow.handlers["PublishHealth"] = crash_for_openvz
        scheduled = json.loads((asl.REPO / "events" / "scheduled-verify.json").read_text())
        s3.delete_object(Bucket=BUCKET, Key="pub/.mirrorkeeper/mirrors.json")
        with pytest.raises(HealthNotPublishedError, match="openvz: Lambda crashed"):
            asl.execute(workflow, scheduled)
        # THEN the execution fails (alarmed), but only after the other mirror and the host were published
        listed = json.loads(s3.get_object(Bucket=BUCKET, Key="pub/.mirrorkeeper/mirrors.json")["Body"].read())
        assert {m["name"] for m in listed} == {"openvz", "debian"}
        emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
        mirrors_sent = {doc.get("Mirror") for doc in emitted if "Mirror" in doc}
        assert mirrors_sent == {"debian"}  # the crashed one sent nothing of its own
        assert any("MirrorsNotOk" in doc for doc in emitted)


def test_mirrors_of_one_host_never_take_each_others_staging_for_a_dead_runs(tmp_path: Path) -> None:
    def run_of(path: str) -> SyncRun:
        aws = AwsConfig(endpoint_url="http://127.0.0.1:9", region="us-east-1")
        layout = MirrorLayout.create(BUCKET, path=path)
        config = SyncConfig(upstream=f"rsync://127.0.0.1:9/{path}/", layout=layout, aws=aws, staging_dir=tmp_path)
        return SyncRun(config, s3_client(aws), RequestCounter())

    # GIVEN a run of one mirror of the host staging its files
    staging = run_of("openvz")._staging_root()
    # WHEN a run of another mirror of the host starts on the same machine, with the same staging directory
    run_of("debian")._staging_root()
    # THEN the first run's files stay; only the next run of the same mirror clears them (its dead run's)
    assert staging.is_dir()
    run_of("openvz")._staging_root()
    assert not staging.exists()
