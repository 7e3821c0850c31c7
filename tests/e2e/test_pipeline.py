"""The one end-to-end test: every part a real process, nothing in-process.

moto's server as its own process, a real rsync daemon, and `mirrorkeeper` commands as
subprocesses, exactly as an operator runs them.
"""

import ftplib
import io
import json
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest

from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import TreeSpec, add_hostile_names, generate_tree, mutate, openvz_like
from tests.support import BUCKET, is_ours, pull, run_cli, serve_cli, tree_files

# The answer to a path that does not exist, by protocol, as verify's table shows it.
MISSING = {"http": "404", "ftp": "550", "rsync": "ENOENT"}


def test_sync_mirrors_upstream_and_follows_its_changes(tmp_path: Path, moto_process: str) -> None:
    upstream = tmp_path / "upstream"
    paths = generate_tree(upstream, TreeSpec(files=300, total_bytes=3_000_000))
    openvz_like(upstream)
    add_hostile_names(upstream)
    s3 = boto3.client("s3", endpoint_url=moto_process, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    with RsyncDaemon(upstream) as daemon:
        args = ["sync", "--upstream", daemon.url, "--bucket", BUCKET, "--prefix", "openvz"]
        for round_number in range(3):
            result = run_cli(args, moto_process)
            assert result.returncode == 0, result.stderr
            summary = json.loads(result.stdout)
            served = {}
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="openvz/pub/"):
                for item in page.get("Contents", []):
                    key = item["Key"][len("openvz/pub/") :]
                    if key and not key.endswith("/") and not is_ours(key):
                        served[key] = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            expected = {k: v[0] for k, v in tree_files(upstream).items()}
            expected["virtuozzo/releases/current"] = served.get("virtuozzo/releases/current", b"")
            assert served == expected, f"round {round_number}"
            assert b"url=7.0.22/" in served["virtuozzo/releases/current"]
            if round_number == 0:
                assert summary["result"] == "success"
                changes = mutate(upstream, paths, 0.02)
            elif round_number == 1:
                assert summary["uploaded_files"] == len(changes["changed"]) + len(changes["added"])
                assert summary["deleted_objects"] >= len(changes["deleted"])
            else:
                assert summary["result"] == "no-change"
    assert "openvz/state/manifest.jsonl.gz" in {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}


def test_demo_runs_a_host_of_two_mirrors_from_nothing_and_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mirrorkeeper", "demo"], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # both mirrors synced twice; the second runs moved only what changed upstream (the Debian-like
    # archive's upload replaced a package: one deletion)
    for mirror in ("openvz", "debian"):
        assert re.search(rf"^first sync\s+{mirror}\s+success\s", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^second sync\s+openvz\s+success\s+1\s", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^second sync\s+debian\s+success\s+\d+\s+\d+\s+1\s", result.stdout, re.MULTILINE)
    # one table: a row per mirror and protocol, each ok and served under the mirror's path (over rsync,
    # the module the path names)
    lines = result.stdout.splitlines()
    header = next(n for n, line in enumerate(lines) if line.split()[:3] == ["mirror", "protocol", "URL"])
    rows = lines[header + 1 : lines.index("", header)]
    assert len(rows) == 6, rows
    front = re.search(r"^front page: http://127\.0\.0\.1:(\d+)/ ", result.stdout, re.MULTILINE)
    assert front, result.stdout
    seen = set()
    for line in rows:
        found = re.fullmatch(
            r"(\w+)\s+(\w+)\s+(\w+)://127\.0\.0\.1:(\d+)/(\w+)/\s+ok\s+\d+ s ago\s+(\d+)/\6\s+(\w+) ok", line
        )
        assert found, line
        mirror, protocol, scheme, port, path, _, missing = found.groups()
        assert scheme == protocol and path == mirror and missing == MISSING[protocol], line
        assert protocol != "http" or port == front[1], line  # the front page is the HTTP front end's root
        seen.add((mirror, protocol))
    assert seen == {(mirror, protocol) for mirror in ("openvz", "debian") for protocol in MISSING}


def test_verify_reports_each_protocol_and_exits_by_health(tmp_path: Path, moto_process: str) -> None:
    # GIVEN a synced mirror, served by both front ends, every one a real process
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    openvz_like(upstream)
    boto3.client("s3", endpoint_url=moto_process, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    with RsyncDaemon(upstream) as daemon:
        assert run_cli(["sync", "--upstream", daemon.url, "--bucket", BUCKET], moto_process).returncode == 0
    with serve_cli("serve-http", moto_process) as http_port, serve_cli("serve-ftp", moto_process) as ftp_port:
        urls = ["--http-url", f"http://127.0.0.1:{http_port}/", "--ftp-url", f"ftp://127.0.0.1:{ftp_port}/"]
        # WHEN verify runs: exit 0, and the workflow's document says why
        healthy = run_cli(["verify", "--bucket", BUCKET, *urls, "--json"], moto_process)
        assert healthy.returncode == 0, healthy.stderr
        state = json.loads(healthy.stdout)
        assert state["health"]["levels"] == {"http": "ok", "ftp": "ok", "mirror": "ok", "overall": "ok"}
        assert set(state) == {"trigger", "mirror", "drift", "probes", "health"}
    # WHEN the front ends are gone: exit 1, both protocols down, the table says so
    down = run_cli(["verify", "--bucket", BUCKET, *urls], moto_process)
    assert down.returncode == 1, down.stderr
    assert re.search(r"^http\s+down", down.stdout, re.MULTILINE) and re.search(
        r"^ftp\s+down", down.stdout, re.MULTILINE
    )
    assert "unreachable" in down.stdout
    # AND a malformed trigger event is a usage error, in one line that names the field
    bad = tmp_path / "event.json"
    bad.write_text(json.dumps({"source": "aws.ecs", "detail-type": "ECS Task State Change"}))
    refused = run_cli(["verify", "--bucket", BUCKET, *urls, "--event", str(bad)], moto_process)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "trigger.time" in refused.stderr, refused.stderr


def test_demo_keep_running_serves_both_mirrors_and_stops_every_service_on_sigterm(tmp_path: Path) -> None:
    # GIVEN the demo left running, as `--keep-running` does
    process = subprocess.Popen(
        [sys.executable, "-m", "mirrorkeeper", "demo", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.lstrip().startswith("services are up"):
                break
        text = "".join(lines)
        http_port, ftp_port, rsync_port, moto_port = (
            int(p) for p in re.findall(r"(?:HTTP|FTP|rsync|S3 \(moto\)) \w+://127\.0\.0\.1:(\d+)", text)
        )
        # THEN each mirror is served under its path over HTTP, and the front page links both
        http = f"http://127.0.0.1:{http_port}/"
        with urllib.request.urlopen(http + "openvz/README", timeout=10) as response:
            assert response.read().startswith(b"OpenVZ downloads mirror")
        with urllib.request.urlopen(http + "debian/dists/trixie/Release", timeout=10) as response:
            assert b"Codename: trixie" in response.read()
        with urllib.request.urlopen(http, timeout=10) as response:
            front_page = response.read()
        assert b'href="/openvz/"' in front_page and b'href="/debian/"' in front_page
        # AND over FTP
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", ftp_port, timeout=10)
            ftp.login()
            assert {"openvz", "debian"} <= set(ftp.nlst())
            assert "Packages" in ftp.nlst("/openvz/virtuozzo/releases/7.0.22/x86_64/os")
            release = io.BytesIO()
            ftp.retrbinary("RETR /debian/dists/bookworm/InRelease", release.write)
            assert release.getvalue().startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
        # AND over rsync, each mirror a module named after its path, as a downstream mirror pulls it
        for mirror in ("openvz", "debian"):
            pulled = pull(rsync_port, tmp_path / mirror, module=mirror)
            assert pulled.returncode == 0, pulled.stderr
        assert (tmp_path / "openvz/README").read_bytes().startswith(b"OpenVZ downloads mirror")
        assert b"Codename: trixie" in (tmp_path / "debian/dists/trixie/Release").read_bytes()
        # WHEN it is told to stop, as a service manager would
        process.terminate()
        # its verdict once it waits (0 for a healthy demo; a loaded machine can make a probe time out,
        # and then it says NOT OK and ends 1); 130 if the signal lands in the instant between its
        # announcement and the wait: what matters is what it leaves behind
        verdict = 0 if "mirrorkeeper demo: OK" in text else 1
        assert process.wait(30) in (verdict, 130), text
        # THEN nothing it started is still listening
        for port in (http_port, ftp_port, rsync_port, moto_port):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if process.poll() is None:
            process.kill()
