"""serve-rsync as the stack runs it (an ECS service behind the load balancer): its health check port,
the wake-up queue that carries each sync's completion, and what it does when its daemon dies. A real
``mirrorkeeper serve-rsync`` and its real rsync daemon against the moto server (S3 and SQS)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3

from mirrorkeeper_dev.rsyncd import free_port
from mirrorkeeper_dev.sampletree import TreeSpec, generate_tree, write_file
from tests.functional.test_serve_rsync import DaemonFactory, counting_gets, sync
from tests.support import BUCKET, pull, run_cli, serve_rsync, served, tree_shape, wait_until


def health(port: int) -> tuple[int, dict[str, Any]]:
    """GET the health check: its status and JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def daemon_pid(server: "subprocess.Popen[bytes]") -> int:
    """The rsync daemon serve-rsync started (its only child)."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    (child,) = children
    return int(child)


def test_the_health_check_fails_until_the_replica_is_complete_and_again_once_the_daemon_dies(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a synced mirror, and serve-rsync building its replica slowly, with a health check port
    generate_tree(upstream, TreeSpec(files=60, total_bytes=120_000))
    sync(rsync_daemon(upstream), endpoint)
    port = free_port()
    slowly = ("--download-concurrency", "1", "--health-port", str(port))
    with counting_gets(endpoint, delay=0.05) as (proxy, _), serve_rsync(proxy, tmp_path / "replica", *slowly) as server:
        # THEN while the rsync port already answers 'initialising', the health check says 503
        wait_until(lambda: _answers(port), what="the health check port")
        status, body = health(port)
        assert (status, body["ready"], body["modules"]) == (503, False, {"mirror": "initialising"}), body
        assert not served(server.port, tmp_path / "early")
        # AND once the build is complete, 200, and clients are served
        wait_until(lambda: health(port)[0] == 200, what="the first build")
        assert health(port)[1] == {"daemon": "running", "modules": {"mirror": "serving"}, "ready": True}
        assert served(server.port, tmp_path / "probe")
        # WHEN the rsync daemon dies
        os.kill(daemon_pid(server), signal.SIGKILL)
        # THEN the health check fails at once (503 naming the daemon, or no answer once serve-rsync
        # has ended), and serve-rsync exits 1
        wait_until(lambda: _fails(port), timeout=5, what="the health check to fail")
        assert server.wait(30) == 1


def _fails(port: int) -> bool:
    try:
        status, body = health(port)
    except OSError:
        return True
    return status == 503 and body["daemon"] == "stopped"


def _answers(port: int) -> bool:
    try:
        health(port)
    except OSError:
        return False
    return True


def test_a_message_on_the_wake_up_queue_applies_a_published_change_without_waiting_for_the_poll(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a served mirror, serve-rsync looking at the manifest only once an hour, and a wake-up queue
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    queue = sqs.create_queue(QueueName="rsync-wake")["QueueUrl"]
    write_file(upstream / "pool/a.rpm", b"package 1", 1_700_000_000)
    daemon = rsync_daemon(upstream)
    sync(daemon, endpoint)
    hourly = ("--poll-interval", "3600", "--wake-queue-url", queue)
    with serve_rsync(endpoint, tmp_path / "replica", *hourly) as server:
        wait_until(lambda: served(server.port, tmp_path / "probe"), what="the first build")
        # WHEN a sync publishes a change, and its completion arrives on the queue (as EventBridge sends it)
        write_file(upstream / "pool/b.rpm", b"package 2", 1_700_000_100)
        sync(daemon, endpoint)
        time.sleep(2)
        assert not (tmp_path / "replica/mirror/pool/b.rpm").exists()  # not applied without the nudge
        event = {"source": "aws.ecs", "detail-type": "ECS Task State Change", "detail": {"lastStatus": "STOPPED"}}
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))
        # THEN the change is served within seconds, not the hour, and the message is consumed
        applied = tmp_path / "replica/mirror/pool/b.rpm"
        wait_until(applied.exists, timeout=30, what="the nudged update")
        result = pull(server.port, tmp_path / "copy")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "copy/pool/b.rpm").read_bytes() == b"package 2"
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "0"
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_a_wake_up_queue_that_cannot_be_read_or_a_taken_health_port_is_one_line_and_exit_2(
    s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN no such queue, and a health port another process holds
    missing = f"{endpoint}/123456789012/no-such-queue"
    with socket.create_server(("127.0.0.1", 0)) as holder:
        taken = holder.getsockname()[1]
        for flags, expected in (
            (["--wake-queue-url", missing], f"cannot read the wake-up queue {missing}: "),
            (["--health-port", str(taken)], f"--health-port {taken}: the port is already in use"),
        ):
            # WHEN serve-rsync starts with it
            result = run_cli(
                ["serve-rsync", "--bucket", BUCKET, "--replica-dir", str(tmp_path), "--port", "0", *flags], endpoint
            )
            # THEN it exits 2 with one line naming the setting to fix
            said = [line for line in result.stderr.splitlines() if not line.startswith("{")]
            assert result.returncode == 2, result.stderr
            assert len(said) == 1 and expected in said[0], said


def test_the_layers_bundled_rsync_lets_verify_probe_rsync_fully_where_the_runtime_has_none(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN the rsync the layer build bundles (mirrorkeeper_dev.lambda_rsync), and a served mirror
    layer = tmp_path / "layer"
    built = subprocess.run(
        [sys.executable, "-m", "mirrorkeeper_dev.lambda_rsync", str(layer)], capture_output=True, text=True, check=True
    )
    assert "bundled" in built.stdout, built.stderr
    generate_tree(upstream, TreeSpec(files=20, total_bytes=60_000))
    sync(rsync_daemon(upstream), endpoint)
    with serve_rsync(endpoint, tmp_path / "replica") as server:
        wait_until(lambda: served(server.port, tmp_path / "probe"), what="the first build")
        probe = ["verify", "--bucket", BUCKET, "--rsync-url", f"rsync://127.0.0.1:{server.port}/mirror/"]
        probe += ["--metrics", "none"]
        # WHEN verify runs where the PATH has no rsync but the layer's (as /opt/bin in the Lambda runtime)
        bundled = run_cli(probe, endpoint, {"PATH": str(layer / "bin")})
        # and where it has none at all
        bare = run_cli(probe, endpoint, {"PATH": str(tmp_path / "empty")})
    # THEN with the bundle, the listing, trace, sampled files and missing path are all checked
    assert bundled.returncode == 0, bundled.stdout + bundled.stderr
    row = next(line for line in bundled.stdout.splitlines() if line.startswith("rsync "))
    assert re.search(r"rsync\s+ok\s+\d+ s ago\s+(\d+)/\1\s+ENOENT ok", row), row
    # AND without it, the handshake alone, which cannot see the files
    bare_row = next(line for line in bare.stdout.splitlines() if line.startswith("rsync "))
    assert "ENOENT ok" not in bare_row, bare_row


def test_a_client_can_neither_write_delete_follow_links_nor_leave_the_module(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a served mirror with a file and a link to it
    write_file(upstream / "pool/a.rpm", b"package 1", 1_700_000_000)
    os.symlink("pool/a.rpm", upstream / "latest.rpm")
    sync(rsync_daemon(upstream), endpoint)
    replica = tmp_path / "replica"
    with serve_rsync(endpoint, replica) as server:
        wait_until(lambda: served(server.port, tmp_path / "probe"), what="the first build")
        module = f"rsync://127.0.0.1:{server.port}/mirror/"
        before = tree_shape(replica / "mirror")
        assert before["pool/a.rpm"] == "file" and before["latest.rpm"] == "-> pool/a.rpm"

        def client(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["rsync", *args], capture_output=True, text=True, timeout=60, check=False)

        # WHEN a client uploads, asks the daemon to delete what it sent, or to follow links as files
        (tmp_path / "evil.txt").write_text("evil")
        upload = client(str(tmp_path / "evil.txt"), module)
        removing = client("--remove-source-files", f"{module}pool/a.rpm", str(tmp_path / "taken"))
        following = client("-L", f"{module}latest.rpm", str(tmp_path / "followed"))
        # or climbs out of the module to the replica's working files
        climbing = client(f"{module}../.replica/rsyncd.conf", str(tmp_path / "conf"))
        # THEN each is refused, and the served tree is as it was
        assert upload.returncode != 0 and "read only" in upload.stderr, upload.stderr
        assert removing.returncode != 0 and "remove-source-files" in removing.stderr, removing.stderr
        assert following.returncode != 0 and "copy-links" in following.stderr, following.stderr
        assert climbing.returncode != 0 and not (tmp_path / "conf").exists(), climbing.stdout
        assert tree_shape(replica / "mirror") == before
        assert (replica / "mirror/pool/a.rpm").read_bytes() == b"package 1"
