"""``mirrorkeeper demo``: a mirror host on this machine, from nothing.

Two sample upstreams, an OpenVZ-shaped tree and a Debian-shaped archive (``dists/``, ``pool/``),
as two modules of a real rsync daemon on loopback; a moto server as AWS, in its own process and
reached over the same boto3 HTTP code path as production; and the host's config file naming both
mirrors. Then what an operator runs, each a real ``mirrorkeeper`` process: ``sync --all`` twice
(upstream moves on in between, so the second run moves only that), ``serve-http`` and
``serve-ftp`` serving every mirror under its path, ``serve-rsync`` serving each as a module of
that name from its local replica, and one ``verify`` over the host (every mirror on every
protocol, each mirror's status page, the host's front page). It prints one table, a row per
mirror and protocol, and the front page's address.

``--upstream`` mirrors a real rsync module instead, as a host of that one mirror; ``--keep-running``
leaves it all up to browse. Exit 0 only when every mirror is healthy on every protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirrorkeeper.aws import s3_client, service_client
from mirrorkeeper.config import (
    AwsConfig,
    Setting,
    add_flags,
    flags_of,
    module_of_path,
    parse_bool,
    parse_mirror_name,
    parse_upstream,
    resolve,
    setting,
)
from mirrorkeeper.display import table
from mirrorkeeper.logs import setup_logging
from mirrorkeeper.verify.summary import ENDPOINT_COLUMNS, endpoint_cells, probed_endpoints
from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import debian_like, openvz_like, write_file
from mirrorkeeper_dev.services import ServiceStartError, moto_subprocess, serving, wait_for_replicas

BUCKET = "mirrorkeeper-demo"
HOST_NAME = "mirrorkeeper demo"
PROTOCOLS = ("http", "ftp", "rsync")
SYNCED = ("success", "no-change")


DEMO = "demo"
DEMO_SETTINGS = (
    Setting(
        "upstream",
        parse_upstream,
        "",
        "mirror this rsync:// URL instead of the generated samples (a host of that one mirror)",
        frozenset({DEMO}),
        "demo",
        default_text="two sample trees on a local rsync daemon",
    ),
    Setting(
        "keep_running", parse_bool, False, "leave the services up until Ctrl-C", frozenset({DEMO}), "demo", switch=True
    ),
    # A person reads the demo's summary: logs stay quiet unless asked for.
    replace(setting("log_format"), commands=frozenset({DEMO}), default="text"),
    replace(setting("log_level"), commands=frozenset({DEMO}), default="WARNING"),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        DEMO,
        help="run a mirror host locally: rsync daemon, moto server, sync, HTTP, FTP and rsync, verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, DEMO, DEMO_SETTINGS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    values = resolve(DEMO, flags_of(args), settings=DEMO_SETTINGS)
    setup_logging(values["log_format"], values["log_level"])
    # The demo's AWS is a moto server on loopback: it takes any key, and real ones must not be sent.
    os.environ.update({"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"})
    os.environ.pop("AWS_SESSION_TOKEN", None)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="mirrorkeeper-demo-") as work:
        root = Path(work)
        if values["upstream"]:
            upstreams = {_mirror_name(values["upstream"]): values["upstream"]}
        else:
            openvz_like(root / "openvz")
            debian_like(root / "debian")
            daemon = RsyncDaemon(root / "openvz", module="openvz", more={"debian": root / "debian"}).start()
            stack.callback(daemon.stop)
            upstreams = {name: daemon.url_of(name) for name in ("openvz", "debian")}
        endpoint = stack.enter_context(moto_subprocess())
        aws = AwsConfig(endpoint_url=endpoint, region="us-east-1")
        s3_client(aws).create_bucket(Bucket=BUCKET)
        config = _write_host_config(root, upstreams)
        # Every command sees the moto server as AWS and nothing of the caller's MIRRORKEEPER_* settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIRRORKEEPER_")}
        env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED"})
        logs = ["--log-format", values["log_format"], "--log-level", values["log_level"]]
        command = [sys.executable, "-m", "mirrorkeeper"]
        sync_all = [*command, "sync", "--config", str(config), "--all", *logs]
        first = _sync_reports(sync_all, env)
        if not values["upstream"]:
            _move_upstream_on(root)
        second = _sync_reports(sync_all, env)
        _print_syncs(upstreams, endpoint, {"first sync": first, "second sync": second})
        urls, servers = {}, {}
        # serve-rsync keeps each mirror's replica on local disk, as on its Fargate task's storage.
        replica = root / "replica"
        replica.mkdir()
        for protocol in PROTOCOLS:
            port = free_port()
            serve = [
                *command,
                f"serve-{protocol}",
                "--config",
                str(config),
                "--port",
                str(port),
                "--log-format",
                "json",
            ]
            if protocol == "rsync":
                serve += ["--replica-dir", str(replica)]
            servers[protocol] = stack.enter_context(serving(serve, port, env, f"serve-{protocol}"))
            urls[protocol] = f"{protocol}://127.0.0.1:{port}/"
        # serve-rsync listens at once, each module 'initialising' until its replica's first build ends:
        # verified before, every rsync row would say down.
        try:
            # Each mirror's path is its name (the config file names no other), its module the path's.
            wait_for_replicas(servers["rsync"], [replica / module_of_path(name) for name in upstreams])
        except ServiceStartError as exc:
            print(f"\nmirrorkeeper demo: {exc}")
            return 1
        topic = service_client("sns", aws).create_topic(Name="mirrorkeeper-demo-alerts")["TopicArn"]
        endpoints = [arg for protocol, url in urls.items() for arg in (f"--{protocol}-url", url)]
        verify = [*command, "verify", "--config", str(config), *endpoints, "--topic-arn", topic, "--json", *logs]
        verified = _run(verify, env)
        if verified.returncode in (0, 1):  # healthy or not, it checked the host and printed the document
            healthy = _print_host(json.loads(verified.stdout), urls) and verified.returncode == 0
        else:
            print(f"\nmirrorkeeper demo: verify failed (exit {verified.returncode}); its error is above")
            healthy = False
        if values["keep_running"]:
            print(
                f"\nservices are up: HTTP {urls['http']}  FTP {urls['ftp']}  rsync {urls['rsync']}  "
                f"S3 (moto) {endpoint}  bucket {BUCKET}  "
                f"host config {config}; Ctrl-C to stop",
                flush=True,  # whoever reads a pipe (a script, a test) learns the services are up now
            )
            _wait_forever()
        synced = all(report.get("result") in SYNCED for report in [*first.values(), *second.values()])
        return 0 if synced and len(first) == len(second) == len(upstreams) and healthy else 1


def _mirror_name(upstream: str) -> str:
    """A real upstream's mirror is named, and served under, the last segment of its URL when that
    makes a mirror name (rsync://host/openvz/ → openvz), else 'upstream'."""
    last = urlsplit(upstream).path.rstrip("/").rsplit("/", 1)[-1].lower()
    try:
        return parse_mirror_name(last) or "upstream"
    except ValueError:
        return "upstream"


def _write_host_config(root: Path, upstreams: Mapping[str, str]) -> Path:
    """The host's mirrors.toml, as an operator writes it: the host, then a table per mirror."""
    (root / "staging").mkdir()
    tables = "".join(f"\n[mirrors.{name}]\nupstream = {json.dumps(url)}\n" for name, url in upstreams.items())
    config = root / "mirrors.toml"
    config.write_text(
        f'[host]\nname = "{HOST_NAME}"\nbucket = "{BUCKET}"\nstaging_dir = {json.dumps(str(root / "staging"))}\n'
        + tables
    )
    return config


def _run(command: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a mirrorkeeper command; its stdout is returned, its stderr (logs at the demo's level, error
    lines) passed on once it ends. Not a terminal for it, so a sync draws no progress line."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr)
    return done


def _sync_reports(command: list[str], env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Run ``sync --all``: each mirror's JSON summary line, by mirror (its errors went to stderr)."""
    done = _run(command, env)
    reports = (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    return {report["mirror"]: report for report in reports}


def _move_upstream_on(root: Path) -> None:
    """Both upstreams change between the syncs: OpenVZ gains a package; the Debian-like archive
    gets an upload that replaces a package in pool/ and rewrites its suite's indices."""
    write_file(
        root / "openvz/virtuozzo/releases/7.0.22/x86_64/os/Packages/vzctl-7.0.22-1.rpm",
        b"new package\n",
        int(time.time()),
    )
    debian_like(root / "debian", uploads=1)


def _print_syncs(upstreams: Mapping[str, str], endpoint: str, runs: Mapping[str, dict[str, dict[str, Any]]]) -> None:
    mirrors = f"{len(upstreams)} mirror" + ("s" if len(upstreams) > 1 else "")
    print(f"\nmirrorkeeper demo — a host of {mirrors} in s3://{BUCKET}/ (moto server {endpoint})")
    for name, upstream in upstreams.items():
        print(f"  {name}: {upstream} → /{name}/")
    rows: list[list[object]] = [["run", "mirror", "result", "uploaded", "bytes", "deleted", "S3 requests", "seconds"]]
    for label, reports in runs.items():
        for name in upstreams:
            report = reports.get(name, {})
            counts = [report.get(key, "-") for key in ("uploaded_files", "uploaded_bytes", "deleted_objects")]
            seconds = f"{report['duration']:.2f}" if "duration" in report else "-"
            rows.append(
                [label, name, report.get("result", "no report"), *counts, report.get("s3_requests", "-"), seconds]
            )
    print(f"\n{table(rows)}")


def _print_host(document: dict[str, Any], urls: Mapping[str, str]) -> bool:
    """The verify document as one table, a row per mirror and protocol, then what is not ok and
    where the front page is. True when every mirror is ok on every protocol."""
    now = time.time()
    rows: list[list[object]] = [["mirror", "protocol", "URL", *ENDPOINT_COLUMNS]]
    findings = []
    for state in document.get("mirrors", []):
        mirror, health = state["mirror"], state["health"]
        if "Error" in health:
            findings.append(f"  {mirror}: health not published ({health['Error']}: {health['Cause']})")
            continue
        probed = {endpoint["protocol"]: endpoint for endpoint in probed_endpoints(state)}
        for protocol in urls:
            endpoint = probed.get(protocol)
            if endpoint is None:  # the probe step failed: the findings say why
                rows.append([mirror, protocol, "-", health["levels"].get(protocol, "?"), "not probed", "", ""])
                continue
            rows.append([mirror, protocol, endpoint["url"], *endpoint_cells(endpoint, health["levels"], now)])
        findings += [
            f"  {mirror}: {f['component']} ({f['level']}): {f['reason']}"
            for f in health["findings"]
            if f["level"] != "ok"
        ]
    host = document.get("host", {})
    healthy = bool(document.get("mirrors")) and not findings and "Error" not in host
    print(f"\nmirrorkeeper demo: {'OK' if healthy else 'NOT OK'}\n\n{table(rows)}")
    if findings:
        print("\nfindings:\n" + "\n".join(findings))
    if "Error" in host:
        print(f"\nhost not published: {host['Cause']}")
    else:
        front_page = host.get("front_page", urls["http"])
        print(f"\nfront page: {front_page}  (for tools: {front_page}.mirrorkeeper/mirrors.json)")
    return healthy


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
