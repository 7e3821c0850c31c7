"""The verify chain on a real mirror: a synced tree on the moto server, serve-http and serve-ftp as
real processes on loopback, SNS messages read back through an SQS subscription on the moto server.

Each fault turns the right level and sends exactly one message; recovery sends one "resolved".
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from mirrorkeeper.aws import s3_client
from mirrorkeeper.config import AwsConfig, VerifyConfig
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.verify.alerts import SnsNotifier
from mirrorkeeper.verify.events import InvalidEventError
from mirrorkeeper.verify.metrics import CloudWatchSink
from mirrorkeeper.verify.workflow import Deps, cli_trigger, publish_host, run_chain
from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import openvz_like
from tests import asl
from tests.faultproxy import fault_proxy
from tests.support import BUCKET, run_cli, serve_cli

REPO = Path(__file__).resolve().parents[2]
HOUR = 3600.0
NAMESPACE = "MirrorkeeperTest"


@dataclass
class Mirror:
    endpoint: str
    upstream: Path
    daemon: RsyncDaemon
    config: VerifyConfig
    s3: Any
    sqs: Any
    queue_url: str

    def deps(self, clock: float | None = None, **changes: Any) -> Deps:
        config = replace(self.config, **changes)
        deps = Deps(
            config,
            s3_client(config.aws),
            CloudWatchSink(boto3.client("cloudwatch", endpoint_url=self.endpoint), NAMESPACE),
            SnsNotifier(boto3.client("sns", endpoint_url=self.endpoint), config.topic_arn),
        )
        if clock is not None:
            deps.clock = lambda: clock
        return deps

    def verify(self, trigger: dict[str, Any] | None = None, clock: float | None = None, **changes: Any) -> Any:
        deps = self.deps(clock, **changes)
        return run_chain(trigger or cli_trigger(deps.clock()), deps)

    def messages(self) -> list[dict[str, Any]]:
        """SNS notifications delivered to the queue since the last call: subject and JSON body."""
        found = []
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return found
            for item in batch:
                envelope = json.loads(item["Body"])
                found.append({"subject": envelope.get("Subject"), "body": json.loads(envelope["Message"])})
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=item["ReceiptHandle"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, own_moto_server: str) -> Iterator[Mirror]:
    """One synced mirror and its front ends per module, on a moto server of its own (the shared one
    is reset by other tests): setting it up costs seconds, each test only resets the health state."""
    # GIVEN an OpenVZ-like upstream synced into the bucket, and both front ends serving it
    endpoint = own_moto_server
    upstream = tmp_path_factory.mktemp("verify") / "upstream"
    upstream.mkdir()
    openvz_like(upstream)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    sns = boto3.client("sns", endpoint_url=endpoint)
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    topic = sns.create_topic(Name="mirror-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    with (
        RsyncDaemon(upstream) as daemon,
        serve_cli("serve-http", endpoint) as http_port,
        serve_cli("serve-ftp", endpoint) as ftp_port,
    ):
        synced = run_cli(["sync", "--upstream", daemon.url, "--bucket", BUCKET], endpoint)
        assert synced.returncode == 0, synced.stderr
        config = VerifyConfig(
            layout=MirrorLayout.create(BUCKET),
            aws=AwsConfig(endpoint_url=endpoint, region="us-east-1"),
            mirror_name="test mirror",
            http_url=f"http://127.0.0.1:{http_port}/",
            ftp_url=f"ftp://127.0.0.1:{ftp_port}/",
            topic_arn=topic,
            sync_interval=HOUR,
            probe_timeout=10.0,
            metrics_namespace=NAMESPACE,
        )
        yield Mirror(endpoint, upstream, daemon, config, s3, sqs, queue_url)


@pytest.fixture
def mirror(prepared: Mirror) -> Mirror:
    """The module's mirror with no health history and no pending messages."""
    prepared.s3.delete_object(Bucket=BUCKET, Key="state/health.json")
    prepared.messages()
    return prepared


def levels(state: dict[str, Any]) -> dict[str, str]:
    return dict(state["health"]["levels"])


def test_a_healthy_mirror_is_ok_emits_metrics_publishes_status_and_sends_nothing(mirror: Mirror) -> None:
    # WHEN the chain runs after a good sync
    state = mirror.verify()
    # THEN every component is ok, and every probe passed on both protocols
    assert levels(state) == {"http": "ok", "ftp": "ok", "mirror": "ok", "overall": "ok"}, state["health"]
    for endpoint in state["probes"]["endpoints"]:
        assert endpoint["failed"] == 0 and endpoint["passed"] >= 10, endpoint
        kinds = {r["kind"] for r in endpoint["results"]}
        assert {"root-listing", "trace", "missing-path", "file", "download"} <= kinds
    assert state["drift"]["drift"] == 0 and state["drift"]["completion_pct"] == 100.0
    # AND no message was sent
    assert mirror.messages() == []
    # AND the mirror's two metrics reached CloudWatch, and the host's step adds the host-wide set the
    # alarms use (per protocol, with no Mirror dimension)
    publish_host({"trigger": state["trigger"], "results": [{"mirror": "", "health": state["health"]}]}, mirror.deps())
    cloudwatch = boto3.client("cloudwatch", endpoint_url=mirror.endpoint)
    fresh = cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName="FreshnessSeconds")["Metrics"]
    assert {d["Value"] for m in fresh for d in m["Dimensions"] if d["Name"] == "Mirror"} == {"test mirror"}
    assert {d["Value"] for m in fresh for d in m["Dimensions"] if d["Name"] == "Protocol"} == {"http", "ftp"}
    assert cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName="SyncDurationSeconds")["Metrics"]
    # AND the status page is served by the front end itself
    status = mirror.s3.get_object(Bucket=BUCKET, Key="pub/.mirrorkeeper/status.json")
    assert json.loads(status["Body"].read())["status"] == "ok"


def test_drift_behind_the_mirrors_back_is_one_message_and_the_next_sync_repairs_it(mirror: Mirror) -> None:
    mirror.verify()
    # GIVEN someone deletes a published package from the bucket and drops a stray file into it
    key = "pub/virtuozzo/releases/7.0.21/x86_64/os/Packages/vzctl-7.0.21.x86_64.rpm"
    mirror.s3.delete_object(Bucket=BUCKET, Key=key)
    mirror.s3.put_object(Bucket=BUCKET, Key="pub/virtuozzo/stray.bin", Body=b"not from upstream")
    # WHEN verify runs twice (no random file sample: a probe that happened to pick the deleted package
    # would turn the protocols degraded too, on one run and not the other)
    first, second = mirror.verify(sample_random=0), mirror.verify(sample_random=0)
    # THEN the mirror is degraded with the paths named, and exactly one message went out
    assert levels(first)["mirror"] == "degraded" and levels(second)["mirror"] == "degraded"
    assert first["drift"]["missing"] == 1 and first["drift"]["examples"]["missing"] == [key[len("pub/") :]]
    assert first["drift"]["extra"] == 1
    sent = mirror.messages()
    assert len(sent) == 1, sent
    assert "DEGRADED" in sent[0]["subject"] and sent[0]["body"]["changes"]["mirror"] == {"from": "ok", "to": "degraded"}
    # WHEN the next sync runs, although upstream did not change
    synced = run_cli(["sync", "--upstream", mirror.daemon.url, "--bucket", BUCKET], mirror.endpoint)
    summary = json.loads(synced.stdout)
    assert synced.returncode == 0 and summary["result"] == "success", synced.stderr
    # THEN it uploaded the lost package again and removed the stray, and verify sends one "resolved"
    assert summary["uploaded_files"] == 1 and summary["deleted_objects"] == 1
    assert mirror.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0
    assert levels(mirror.verify())["overall"] == "ok"
    resolved = mirror.messages()
    assert [m["body"]["notice"] for m in resolved] == ["resolved"] and "RESOLVED" in resolved[0]["subject"]
    # AND the sync after that takes the no-change shortcut again
    again = json.loads(run_cli(["sync", "--upstream", mirror.daemon.url, "--bucket", BUCKET], mirror.endpoint).stdout)
    assert again["result"] == "no-change"


def test_a_stopped_front_end_is_down(mirror: Mirror) -> None:
    mirror.verify()
    # GIVEN the FTP front end's port answers nothing (the server process is gone)
    state = mirror.verify(ftp_url="ftp://127.0.0.1:9/")
    assert levels(state)["ftp"] == "down" and levels(state)["http"] == "ok" and levels(state)["overall"] == "down"
    sent = mirror.messages()
    assert len(sent) == 1 and sent[0]["body"]["changes"]["ftp"] == {"from": "ok", "to": "down"}
    assert "unreachable" in json.dumps(sent[0]["body"]["findings"])


@pytest.mark.parametrize(("status", "code"), [(403, "AccessDenied"), (200, "NotAnError")])
def test_a_front_end_answering_wrongly_for_missing_files_is_degraded(mirror: Mirror, status: int, code: str) -> None:
    mirror.verify()

    # GIVEN an HTTP front end that answers 403 (S3 without ListBucket) or 200 for missing files
    def rule(method: str, path: str, number: int) -> tuple[int, str] | None:
        return (status, code) if "mirrorkeeper-probe-missing" in path else None

    with fault_proxy(mirror.config.http_url.rstrip("/"), rule) as proxy:
        state = mirror.verify(http_url=f"{proxy['url']}/")
    assert levels(state)["http"] == "degraded" and levels(state)["ftp"] == "ok"
    http = next(e for e in state["probes"]["endpoints"] if e["protocol"] == "http")
    assert http["missing_check"] is False
    sent = mirror.messages()
    assert len(sent) == 1 and f"answered {status}" in json.dumps(sent[0]["body"]["findings"])


def test_a_stale_trace_is_degraded_then_down_then_resolved(mirror: Mirror) -> None:
    now = time.time()
    mirror.verify(clock=now)
    # WHEN time passes with no sync: 3 intervals, then 7
    degraded = mirror.verify(clock=now + 3 * HOUR)
    down = mirror.verify(clock=now + 7 * HOUR)
    # THEN both protocols go degraded, then down: one message each time
    assert levels(degraded)["http"] == levels(degraded)["ftp"] == "degraded"
    assert levels(down)["http"] == levels(down)["ftp"] == "down"
    sent = mirror.messages()
    assert [m["body"]["overall"] for m in sent] == ["degraded", "down"]
    assert "stale" in json.dumps(sent[1]["body"]["findings"])
    # AND a fresh sync brings one "resolved"
    (mirror.upstream / "README").write_text("updated\n")
    assert run_cli(["sync", "--upstream", mirror.daemon.url, "--bucket", BUCKET], mirror.endpoint).returncode == 0
    after = mirror.verify(clock=time.time())
    assert levels(after)["overall"] == "ok", after["health"]["findings"]
    assert [m["body"]["notice"] for m in mirror.messages()] == ["resolved"]


def ecs_event(name: str, stopped: float) -> dict[str, Any]:
    event = json.loads((REPO / "events" / name).read_text())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stopped))
    event["time"], event["detail"]["stoppedAt"] = stamp, stamp
    return event


@pytest.mark.parametrize(
    ("event", "words"),
    [
        ("ecs-task-stopped-failed.json", "exit 1"),
        ("ecs-task-stopped-never-started.json", "CannotPullContainerError"),
        ("ecs-task-stopped-deletion-guard.json", "--force-delete"),
    ],
)
def test_a_failed_sync_task_event_degrades_the_mirror(mirror: Mirror, event: str, words: str) -> None:
    mirror.verify()
    # WHEN the workflow is triggered by the sync task's STOPPED event, after the last good report
    state = mirror.verify(trigger=ecs_event(event, time.time() + 5))
    # THEN the mirror is degraded with the reason, and one message says so
    assert levels(state)["mirror"] == "degraded" and levels(state)["http"] == "ok"
    sent = mirror.messages()
    assert len(sent) == 1 and words in json.dumps(sent[0]["body"]["findings"])
    # AND a later scheduled verify still remembers the failure (a crash leaves no run report)
    assert levels(mirror.verify())["mirror"] == "degraded"
    assert mirror.messages() == []


def test_a_successful_sync_task_event_is_ok(mirror: Mirror) -> None:
    state = mirror.verify(trigger=ecs_event("ecs-task-stopped-success.json", time.time()))
    assert levels(state)["overall"] == "ok"
    assert mirror.messages() == []


@pytest.fixture
def lambda_env(mirror: Mirror, monkeypatch: pytest.MonkeyPatch) -> asl.Workflow:
    """The environment template.yaml gives the three functions, pointed at the test's servers."""
    config = mirror.config
    for name, value in {
        "MIRRORKEEPER_BUCKET": BUCKET,
        "MIRRORKEEPER_MIRROR_NAME": config.mirror_name,
        "MIRRORKEEPER_HTTP_URL": config.http_url,
        "MIRRORKEEPER_FTP_URL": config.ftp_url,
        "MIRRORKEEPER_SYNC_INTERVAL": "3600",
        "MIRRORKEEPER_TOPIC_ARN": config.topic_arn,
        "MIRRORKEEPER_METRICS_NAMESPACE": NAMESPACE,
        "AWS_ENDPOINT_URL": mirror.endpoint,
        "POWERTOOLS_SERVICE_NAME": "mirrorkeeper",
        "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
    }.items():
        monkeypatch.setenv(name, value)
    return asl.deployed_workflow()


def test_the_lambdas_in_state_machine_order_agree_with_mirrorkeeper_verify(
    mirror: Mirror, lambda_env: asl.Workflow, capsys: pytest.CaptureFixture[str]
) -> None:
    trigger = ecs_event("ecs-task-stopped-failed.json", time.time() + 5)
    # WHEN the failed-sync event runs through the three handlers, as the state machine chains them
    deployed = asl.execute(lambda_env, trigger)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    published = json.loads(mirror.s3.get_object(Bucket=BUCKET, Key="state/health.json")["Body"].read())
    # AND, from the same starting state, through mirrorkeeper verify's chain
    mirror.s3.delete_object(Bucket=BUCKET, Key="state/health.json")
    local = mirror.verify(trigger=trigger)
    # THEN both reach the same verdict and findings (the deployed one as its status page tells it)
    assert [r["mirror"] for r in deployed["results"]] == [""] and deployed["host"]["not_ok"] == [""]
    assert deployed["results"][0]["health"]["overall"] == local["health"]["overall"] == "degraded"
    assert published["levels"] == levels(local)
    assert levels(local) == {"http": "ok", "ftp": "ok", "mirror": "degraded", "overall": "degraded"}
    local_reasons = [f["reason"] for f in local["health"]["findings"] if f["component"] == "mirror"]
    assert published["mirror_reasons"] == local_reasons and local_reasons
    assert len(mirror.messages()) == 2  # one per run: each started from an empty history
    # AND the mirror's Lambda sent its two metrics as EMF with the Mirror dimension, the host's its set
    # with none or Protocol alone
    names: dict[tuple[str, ...], set[str]] = {}
    for doc in emitted:
        for block in doc["_aws"]["CloudWatchMetrics"]:
            for dims in block["Dimensions"]:
                names.setdefault(tuple(dims), set()).update(m["Name"] for m in block["Metrics"])
    assert names[("Mirror",)] == {"HealthLevel", "FreshnessSeconds"}
    assert set(names) == {("Mirror",), (), ("Protocol",)}
    assert {"HealthLevel", "MirrorsNotOk", "SyncFailed"} <= names[()]
    assert {"FreshnessSeconds", "ProbesFailed"} <= names[("Protocol",)]


def test_a_malformed_event_is_refused_with_the_field_named(lambda_env: asl.Workflow) -> None:
    handler = lambda_env.handlers["PublishHealth"]
    event = {"trigger": json.loads((REPO / "events" / "scheduled-verify.json").read_text()), "drift": {}}
    with pytest.raises(InvalidEventError, match="probes"):
        handler(event)


def test_unreachable_s3_is_one_line_and_exit_1() -> None:
    # GIVEN S3 (here: a port nobody listens on) is unreachable
    nowhere = f"http://127.0.0.1:{free_port()}"
    args = ["verify", "--bucket", BUCKET, "--http-url", "http://127.0.0.1:9/", "--s3-max-attempts", "1"]
    result = run_cli([*args, "--log-level", "INFO"], nowhere)
    # THEN verify says so in one line before any step runs (no error per step and mirror), and exits 1
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("mirrorkeeper verify: error: cannot reach the AWS endpoint"), lines
    assert "--endpoint-url" in lines[-1] and not [line for line in lines[:-1] if "ERROR" in line], lines
    assert "Traceback" not in result.stderr


def test_a_partial_sync_degrades_the_mirror_lists_the_paths_and_a_quarantine_is_alerted_once(
    mirror: Mirror,
) -> None:
    # GIVEN the last sync's report: one path skipped, one newly quarantined, one held deletion
    last = json.loads(mirror.s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read())
    partial = {
        **last,
        "run_id": f"{last['run_id']}-partial",
        "finished": time.time(),
        "result": "partial",
        "exit_code": 5,
        "failed": [{"path": "pool/\x1b[31mbad.rpm", "reason": "upstream refused it: Permission denied (13)"}],
        "failed_total": 1,
        "quarantined": [{"path": "iso/stuck.iso", "reason": "vanished upstream during the run", "since": 1.0}],
        "newly_quarantined": ["iso/stuck.iso"],
    }
    mirror.s3.put_object(Bucket=BUCKET, Key="state/runs/last.json", Body=json.dumps(partial).encode())
    try:
        # WHEN the chain runs
        state = mirror.verify()
        # THEN the mirror is degraded with the first skipped path as the reason
        assert levels(state)["mirror"] == "degraded"
        assert any("skipped" in f["reason"] and "bad.rpm" in f["reason"] for f in state["health"]["findings"])
        # AND the quarantine is alerted, once, beside the level change
        subjects = [m["subject"] for m in mirror.messages()]
        assert sum("QUARANTINED" in s for s in subjects) == 1, subjects
        assert state["health"]["quarantine_alert"] == ["iso/stuck.iso"]
        # AND the status page lists both paths, the escape sequence shown, never raw
        page = mirror.s3.get_object(Bucket=BUCKET, Key="pub/.mirrorkeeper/status.html")["Body"].read().decode()
        assert "iso/stuck.iso" in page and "pool/\\#033[31mbad.rpm" in page and "\x1b" not in page
        status = json.loads(mirror.s3.get_object(Bucket=BUCKET, Key="pub/.mirrorkeeper/status.json")["Body"].read())
        assert [s["path"] for s in status["skipped"]] == ["pool/\x1b[31mbad.rpm"]
        assert [q["path"] for q in status["quarantined"]] == ["iso/stuck.iso"]
        assert 0 <= status["completion_pct"] <= 1
        # AND the next verify of the same report sends no second quarantine message
        again = mirror.verify()
        assert again["health"]["quarantine_alert"] == []
        assert not any("QUARANTINED" in m["subject"] for m in mirror.messages())
    finally:
        mirror.s3.put_object(Bucket=BUCKET, Key="state/runs/last.json", Body=json.dumps(last).encode())
