"""``mirrorkeeper demo``: the pipeline on this machine, from nothing.

A sample upstream (OpenVZ-shaped) on a real rsync daemon on loopback, a moto server as AWS
(the same boto3 HTTP code path as production), a first sync and a second, incremental one, both
front ends (serve-http, serve-ftp) as real processes on loopback, then one verify (diff, probe
every protocol, publish health); a summary a person reads in five seconds and the status page's
address. ``--upstream`` mirrors a real rsync module; ``--keep-running`` leaves it all up to
browse. Exit 0 only when every protocol is healthy.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from mirrorkeeper.aws import RequestCounter, s3_client, service_client
from mirrorkeeper.config import (
    AwsConfig,
    Setting,
    SyncConfig,
    VerifyConfig,
    add_flags,
    flags_of,
    parse_bool,
    parse_upstream,
    resolve,
    setting,
)
from mirrorkeeper.display import table
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.logs import setup_logging
from mirrorkeeper.state import RunReport, SyncResult
from mirrorkeeper.sync.run import SyncRun
from mirrorkeeper.verify.summary import print_verify_summary
from mirrorkeeper.verify.workflow import Deps, cli_trigger, run_chain
from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import openvz_like, write_file
from mirrorkeeper_dev.services import serving

BUCKET = "mirrorkeeper-demo"
log = logging.getLogger(__name__)


DEMO = "demo"
DEMO_SETTINGS = (
    Setting(
        "upstream",
        parse_upstream,
        "",
        "mirror this rsync:// URL instead of the generated sample",
        frozenset({DEMO}),
        "demo",
        default_text="a sample tree on a local rsync daemon",
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
        help="run the whole pipeline locally: rsync daemon, moto server, sync, HTTP and FTP, verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, DEMO, DEMO_SETTINGS)
    parser.set_defaults(handler=run)


def _moto_server(stack: ExitStack) -> str:
    from moto.server import ThreadedMotoServer  # here: importing moto takes a while, and only the demo needs it

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stack.callback(server.stop)
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


def _sync(upstream: str, aws: AwsConfig, staging: Path) -> RunReport:
    config = SyncConfig(
        upstream=upstream,
        layout=MirrorLayout.create(BUCKET),
        aws=aws,
        staging_dir=staging,
        mirror_name="mirrorkeeper demo",
    )
    counter = RequestCounter()
    return SyncRun(config, s3_client(aws, counter), counter).run()


def run(args: argparse.Namespace) -> int:
    values = resolve(DEMO, flags_of(args), settings=DEMO_SETTINGS)
    setup_logging(values["log_format"], values["log_level"])
    # The demo's AWS is a moto server on loopback: it takes any key, and real ones must not be sent.
    os.environ.update({"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"})
    os.environ.pop("AWS_SESSION_TOKEN", None)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="mirrorkeeper-demo-") as work:
        root = Path(work)
        if values["upstream"]:
            upstream = values["upstream"]
        else:
            (root / "upstream").mkdir()
            openvz_like(root / "upstream")
            daemon = RsyncDaemon(root / "upstream").start()
            stack.callback(daemon.stop)
            upstream = daemon.url
        endpoint = _moto_server(stack)
        aws = AwsConfig(endpoint_url=endpoint, region="us-east-1")
        s3_client(aws).create_bucket(Bucket=BUCKET)
        (root / "staging").mkdir()
        first = _sync(upstream, aws, root / "staging")
        if not values["upstream"]:
            # Upstream moves on: a new release appears; the second run moves only that.
            write_file(
                root / "upstream/virtuozzo/releases/7.0.22/x86_64/os/Packages/vzctl-7.0.22-1.rpm",
                b"new package\n",
                int(time.time()),
            )
        second = _sync(upstream, aws, root / "staging")
        _print_syncs(upstream, endpoint, [("first sync", first), ("second sync", second)])
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIRRORKEEPER_")}
        env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED"})
        ports = {"http": free_port(), "ftp": free_port()}
        for protocol, port in ports.items():
            command = [sys.executable, "-m", "mirrorkeeper", f"serve-{protocol}", "--bucket", BUCKET]
            command += ["--port", str(port), "--log-format", "json"]
            stack.enter_context(serving(command, port, env, f"serve-{protocol}"))
        topic = service_client("sns", aws).create_topic(Name="mirrorkeeper-demo-alerts")["TopicArn"]
        config = VerifyConfig(
            layout=MirrorLayout.create(BUCKET),
            aws=aws,
            mirror_name="mirrorkeeper demo",
            http_url=f"http://127.0.0.1:{ports['http']}/",
            ftp_url=f"ftp://127.0.0.1:{ports['ftp']}/",
            topic_arn=topic,
        )
        state = run_chain(cli_trigger(time.time()), Deps.create(config))
        print_verify_summary(state, config.mirror_name)
        if values["keep_running"]:
            print(
                f"\nservices are up: HTTP {config.http_url}  FTP {config.ftp_url}  S3 (moto) {endpoint}  "
                f"bucket {BUCKET}; Ctrl-C to stop",
                flush=True,  # whoever reads a pipe (a script, a test) learns the services are up now
            )
            _wait_forever()
        synced = all(r.result in (SyncResult.SUCCESS, SyncResult.NO_CHANGE) for r in (first, second))
        return 0 if synced and state["health"]["overall"] == "ok" else 1


def _print_syncs(upstream: str, endpoint: str, runs: list[tuple[str, RunReport]]) -> None:
    print(f"\nmirrorkeeper demo — upstream {upstream} → s3://{BUCKET}/pub/ (moto server {endpoint})\n")
    rows: list[tuple[Any, ...]] = [("run", "result", "uploaded", "bytes", "deleted", "S3 requests", "seconds")]
    for label, report in runs:
        rows.append(
            (
                label,
                report.result.value,
                report.uploaded_files,
                report.uploaded_bytes,
                report.deleted_objects,
                report.s3_requests,
                f"{report.duration:.2f}",
            )
        )
    print(table(rows))
    last = runs[-1][1]
    print(
        f"\nmirror: {last.mirror_entries} entries, {last.mirror_bytes} bytes; skipped {last.skipped_total} "
        "unsafe or unmirrorable names"
    )


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
