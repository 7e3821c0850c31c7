"""``mirrorkeeper verify``: diff → probe → publish, the deployed workflow's steps run here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from mirrorkeeper.config import VERIFY, add_flags, flags_of, resolve
from mirrorkeeper.errors import ConfigError, ExitCode
from mirrorkeeper.logs import setup_logging

log = logging.getLogger(__name__)

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
    add_flags(parser, VERIFY)
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
    from mirrorkeeper.aws import check_bucket
    from mirrorkeeper.verify.summary import print_verify_summary
    from mirrorkeeper.verify.workflow import HostDeps, cli_trigger, run_host

    flags = flags_of(args)
    values = resolve(VERIFY, flags)
    setup_logging(values["log_format"], values["log_level"])
    deps = HostDeps.load(flags, values["metrics"])
    trigger = _read_event(values["event"]) if values["event"] else cli_trigger(time.time())
    # An S3 that cannot be reached (or a bucket that is not there) fails every step: one line now,
    # not a failure per step and per mirror.
    check_bucket(deps.host.s3, deps.host.config.layout.bucket)
    result = run_host(trigger, deps, only=values["mirror"] if deps.settings else "")
    states, host = result["mirrors"], result["host"]
    if values["json"]:
        # A host of one prints its one mirror's document, as it always has; a host, every mirror's and its own.
        json.dump(result if deps.settings else states[0], sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        for state in states:
            print_verify_summary(state, state["mirror"] or deps.host.config.mirror_name)
        if deps.settings and "Error" not in host:
            print(
                f"\nhost: {host['mirrors']} mirrors checked, not ok: {', '.join(host['not_ok']) or 'none'}; "
                f"front page {host['front_page']}"
            )
    if "Error" in host:
        log.error("%s", host["Cause"])
    healthy = all(state["health"].get("overall") == "ok" for state in states) and "Error" not in host
    return int(ExitCode.OK) if healthy else int(ExitCode.FAILURE)
