"""Push to sync start (issue 14, "Performance"), against baselines measured in the same run.

``mirrorkeeper serve-push`` with ``--sync-task-definition`` (the stack's way: ecs:RunTask) over a moto
server in its own process, for a host of N mirrors, each pushed once: a second push to a mirror whose
sync is on its way would only queue. Measured: from signing a push to its ``202 started``, which the
endpoint sends only after RunTask returned, so an upper bound on push → RunTask; the run checks that
moto holds one task per push. Baselines, on the same loopback and moto server:

- **bare HTTP round trip**: the same signed POST to a server that answers 202 and does nothing else,
  in its own process (http.server, as serve-push);
- **bare RunTask**: boto3's RunTask of the same task definition from a warm client, what any starter pays.

Target: median push → RunTask <= 2 s (of 10). Run: ``.venv/bin/python bench/push.py [--pushes N]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3
from harness import BenchError, MotoServer, compile_mirrorkeeper, run_in_workdir
from report import ratio, table
from run import clean_env

from mirrorkeeper.push.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from mirrorkeeper_dev.ecs import SyncTask, sync_task
from mirrorkeeper_dev.rsyncd import free_port
from mirrorkeeper_dev.services import serving

TARGET_SECONDS = 2.0
BUCKET = "bench-push"

# The bare round trip's server: reads the body, answers 202 with a line of JSON, closes, as serve-push does.
BARE_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Accept(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"status": 202, "result": "started"}\\n'
        self.send_response(202)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Accept).serve_forever()
"""


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def signed_push(port: int, mirror: str, secret: bytes) -> float:
    """Seconds from signing a push to ``mirror`` to its answer, which must be 202 started."""
    started = time.perf_counter()
    body = json.dumps({"mirror": mirror, "nonce": secrets.token_hex(16)}).encode()
    stamp = str(int(time.time()))
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(secret, stamp, body)}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", f"/push/{mirror}", body, headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    elapsed = time.perf_counter() - started
    if response.status != 202 or answer.get("result") != "started":
        raise BenchError(f"the push to {mirror} was answered {response.status}: {answer}")
    return elapsed


def timed(count: int, once: Callable[[int], float]) -> list[float]:
    return [once(number) for number in range(count)]


def host_config(workdir: Path, mirrors: int, secret_file: Path) -> Path:
    """A host of ``mirrors`` mirrors sharing one push secret; their upstreams are never contacted."""
    config = workdir / "mirrors.toml"
    tables = "".join(
        f'[mirrors.m{n}]\nupstream = "rsync://127.0.0.1:9/m{n}/"\npush_secret_file = "{secret_file}"\n\n'
        for n in range(mirrors)
    )
    config.write_text(f'[host]\nname = "bench"\nbucket = "{BUCKET}"\npush_rate_limit = 600\n\n{tables}')
    return config


def bench(workdir: Path, pushes: int) -> list[str]:
    secret = secrets.token_hex(32).encode()
    secret_file = workdir / "push.secret"
    secret_file.write_text(secret.decode())
    with MotoServer(workdir, clean_env(workdir, "http://127.0.0.1:9")) as moto:
        env = clean_env(workdir, moto.url)
        # This process's own clients (the task, the bucket, the bare RunTask) use the same dummy credentials.
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        task = sync_task(moto.url)
        config = host_config(workdir, pushes, secret_file)

        progress("bare HTTP round trip")
        port = free_port()
        with serving([sys.executable, "-c", BARE_SERVER, str(port)], port, env, "the bare server"):
            signed_push(port, "warm-up", secret)
            bare_http = timed(pushes, lambda n: signed_push(port, f"m{n}", secret))

        progress("bare RunTask")
        ecs = boto3.client("ecs", endpoint_url=moto.url, region_name="us-east-1")
        bare_run_task = timed(pushes + 1, lambda n: run_task(ecs, task))[1:]  # the first opens the connection

        progress(f"{pushes} pushes through serve-push")
        port = free_port()
        command = [sys.executable, "-m", "mirrorkeeper", "serve-push", "--config", str(config), "--port", str(port)]
        with serving([*command, *task.flags()], port, env, "serve-push"):
            push = timed(pushes, lambda n: signed_push(port, f"m{n}", secret))
        started = started_by_pushes(ecs, task)
        if started != pushes:
            raise BenchError(f"{pushes} pushes started {started} sync tasks, not one each")

    rows = {
        "push → 202 started (RunTask done)": push,
        "bare HTTP round trip": bare_http,
        "bare RunTask (boto3, warm)": bare_run_task,
    }
    base_http, base_task = statistics.median(bare_http), statistics.median(bare_run_task)
    lines = [
        f"push to sync start: serve-push → moto ECS RunTask, {pushes} pushes (one per mirror), milliseconds",
        *table(
            ["measure", "median", "min", "max", "vs bare HTTP", "vs bare RunTask"],
            [
                [
                    name,
                    f"{statistics.median(values) * 1000:.1f}",
                    f"{min(values) * 1000:.1f}",
                    f"{max(values) * 1000:.1f}",
                    ratio(statistics.median(values) / base_http),
                    ratio(statistics.median(values) / base_task),
                ]
                for name, values in rows.items()
            ],
        ),
    ]
    median = statistics.median(push)
    verdict = "PASS" if median <= TARGET_SECONDS else "MISS"
    lines.append(f"{verdict}  push → RunTask, median of {pushes} <= {TARGET_SECONDS:.0f} s: {median:.3f} s")
    return lines


def run_task(ecs: Any, task: SyncTask) -> float:
    network = {"awsvpcConfiguration": {"subnets": [task.subnet], "securityGroups": [task.security_group]}}
    started = time.perf_counter()
    ecs.run_task(
        cluster=task.cluster,
        taskDefinition=task.task_definition,
        launchType="FARGATE",
        startedBy="bench-baseline",
        networkConfiguration=network,
    )
    return time.perf_counter() - started


def started_by_pushes(ecs: Any, task: SyncTask) -> int:
    return len(ecs.list_tasks(cluster=task.cluster, startedBy="mirrorkeeper-push")["taskArns"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=10, help="pushes measured, one per mirror (default 10)")
    options = parser.parse_args(argv)
    compile_mirrorkeeper()
    return run_in_workdir("push", lambda workdir: bench(workdir, options.pushes))


if __name__ == "__main__":
    sys.exit(main())
