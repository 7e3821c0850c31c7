"""``mirrorkeeper verify``: diff → probe → publish, the deployed workflow's steps run here."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from mirrorkeeper.commands.common import add_location_flags, add_logging_flags, flags_of
from mirrorkeeper.config import load_verify_config
from mirrorkeeper.errors import ConfigError, ExitCode
from mirrorkeeper.logs import setup_logging

DESCRIPTION = """\
Verify the mirror: the same three steps, in the same order, as the deployed workflow
(statemachine/verify.asl.json) that runs after every sync and on its own schedule.

  1. diff-manifests   the upstream listing and the published manifest against what S3 holds:
                      missing, extra and wrong-size objects (drift), lag, completion %
  2. probe-endpoints  every endpoint given (--http-url, --ftp-url, --rsync-url): root listing,
                      trace file age, sampled files (status, size, mtime), a few downloaded and
                      hashed, and a fresh missing path that must answer 404 / 550
  3. publish-health   levels ok / degraded / down per protocol and overall, metrics to
                      CloudWatch, health history in private state, the status page
                      (.mirrorkeeper/status.html and .json in the served tree), and an SNS
                      message (--topic-arn) only when a level changes, plus reminders

Every flag can also be set as MIRRORKEEPER_<FLAG> or in the --config TOML file; the Lambdas
read the same variables.

exit codes:
  0  every protocol and the mirror are ok
  1  something is degraded or down (the summary and the findings say what)
  2  usage or configuration error, or a malformed --event
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="diff manifests, probe every endpoint, publish health (the verify workflow, locally)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_location_flags(parser)
    endpoints = parser.add_argument_group("endpoints to probe")
    endpoints.add_argument("--http-url", help="http(s)://HOST[:PORT]/ of the HTTP front end [MIRRORKEEPER_HTTP_URL]")
    endpoints.add_argument("--ftp-url", help="ftp://HOST[:PORT]/ of the FTP front end [MIRRORKEEPER_FTP_URL]")
    endpoints.add_argument("--rsync-url", help="rsync://HOST[:PORT]/MODULE/ if the mirror serves rsync")
    rules = parser.add_argument_group("health rules and alerts")
    rules.add_argument(
        "--sync-interval",
        help="how often the sync runs, e.g. 1h: stale beyond 2x is degraded, beyond 6x down (default: 1h)",
    )
    rules.add_argument("--topic-arn", help="SNS topic for alerts (default: alerts only logged)")
    rules.add_argument("--reminder-interval", help="repeat an alert while a level stays bad (default: 6h)")
    rules.add_argument("--mirror-name", help="name in alerts, metrics and the status page (default: the bucket)")
    rules.add_argument("--metrics-namespace", help="CloudWatch namespace (default: Mirrorkeeper)")
    rules.add_argument(
        "--metrics",
        choices=("cloudwatch", "emf", "none"),
        default="cloudwatch",
        help="where metrics go: PutMetricData, EMF lines on stdout (as in Lambda), or nowhere (default: cloudwatch)",
    )
    probing = parser.add_argument_group("probing")
    probing.add_argument("--probe-timeout", help="seconds each probe may take (default: 10)")
    probing.add_argument("--probe-concurrency", help="parallel probes per endpoint (default: 8; FTP at most 4)")
    probing.add_argument("--sample-random", help="random files checked per endpoint (default: 8)")
    probing.add_argument("--sample-newest", help="newest files checked (default: 4)")
    probing.add_argument("--sample-late", help="index/checksum files checked (default: 4)")
    probing.add_argument("--sample-download", help="sampled files downloaded and hashed (default: 3)")
    probing.add_argument("--download-max-bytes", help="largest file downloaded for hashing (default: 8M)")
    probing.add_argument(
        "--cache-grace",
        help="how long a front end may serve a copy older than the last sync (a CDN cache) before it counts "
        "as a failure (default: 1h)",
    )
    probing.add_argument("--trace-path", help="trace file inside the mirror (default: .mirrorkeeper/trace)")
    probing.add_argument("--late-patterns", help="index file patterns, as for sync (default: apt, yum, checksums)")
    parser.add_argument(
        "--event", help="trigger event JSON file (e.g. events/ecs-task-stopped-failed.json; default: a manual run)"
    )
    parser.add_argument("--json", action="store_true", help="print the workflow's final state document as JSON")
    add_logging_flags(parser)
    parser.set_defaults(handler=run)


def _read_event(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            event = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read --event {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"--event {path} is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ConfigError(f"--event {path} must hold a JSON object")
    return event


def run(args: argparse.Namespace) -> int:
    from mirrorkeeper.verify.summary import print_verify_summary
    from mirrorkeeper.verify.workflow import Deps, cli_trigger, run_chain

    setup_logging(args.log_format, args.log_level)
    flags = {k: v for k, v in flags_of(args).items() if k not in ("event", "json", "metrics")}
    config = load_verify_config(flags)
    trigger = _read_event(args.event) if args.event else cli_trigger(time.time())
    state = run_chain(trigger, Deps.create(config, args.metrics))
    if args.json:
        json.dump(state, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        print_verify_summary(state, config.mirror_name)
    return int(ExitCode.OK) if state["health"]["overall"] == "ok" else int(ExitCode.FAILURE)
