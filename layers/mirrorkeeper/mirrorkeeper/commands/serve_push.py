"""``mirrorkeeper serve-push``: the push endpoint over HTTP, the local twin of the stack's push function."""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import ExitStack
from typing import IO, Any

from mirrorkeeper.commands.serve_common import binding, listening_url
from mirrorkeeper.config import SERVE_PUSH, SYNC, add_flags, flags_of, load_push_config, resolve, settings_for
from mirrorkeeper.errors import ConfigError

log = logging.getLogger(__name__)

DESCRIPTION = """\
Take pushes from upstreams: POST /push/<mirror> with X-Mirrorkeeper-Timestamp (epoch seconds) and
X-Mirrorkeeper-Signature: sha256=<HMAC-SHA256 of '<timestamp>.<body>' under the mirror's push
secret>, as 'mirrorkeeper push' sends it. A valid push starts the mirror's sync at once, or, while
one runs, makes it run once more after (however many pushes arrive meanwhile).

The same handler as the stack's push function: the same answers (202 started or queued; 401 bad or
missing signature; 403 timestamp more than 5 minutes off, or a signature already used; 404 no such
mirror, or one without a push secret; 413 body over 64 KiB; 429 over --push-rate-limit), the same
state in the bucket. The mirrors are the config file's [mirrors.NAME] tables with a push_secret or
push_secret_file; a host of one (no tables) takes pushes under its --mirror-name in lowercase, with
hyphens for anything else ('OpenVZ Download': /push/openvz-download).

The sync starts as 'mirrorkeeper sync [--mirror NAME]' on this machine, with this environment and
the flags given here that sync takes (--config, --bucket, --endpoint-url...), its output appended
to --sync-log; or, with --sync-task-definition, as an ECS task (the stack's way). Runs until
interrupted; a sync it started goes on.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        SERVE_PUSH,
        help="take signed pushes from upstreams and start their mirrors' syncs (the push function's twin)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, SERVE_PUSH)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mirrorkeeper.aws import check_bucket, s3_client, service_client
    from mirrorkeeper.logs import setup_logging
    from mirrorkeeper.push.handler import PushHandler
    from mirrorkeeper.push.secrets import Secrets
    from mirrorkeeper.push.server import PushHTTPServer
    from mirrorkeeper.push.starters import EcsSyncStarter, ProcessSyncStarter, SyncStarter

    flags = flags_of(args)
    values = resolve(SERVE_PUSH, flags)
    config = load_push_config(flags)
    setup_logging(values["log_format"], values["log_level"])
    open_mirrors = [mirror for mirror in config.mirrors.values() if not mirror.closed]
    if not open_mirrors:
        raise ConfigError(
            "no mirror takes pushes: give each that does a push_secret or push_secret_file in its [mirrors.NAME] "
            "table (a host of one: --push-secret-file FILE or --push-secret REF)"
        )
    secrets = Secrets(config.aws)
    for mirror in open_mirrors:
        secrets.of(mirror)  # an unreadable secret is the operator's to fix now, not at the first push
    client = s3_client(config.aws)
    check_bucket(client, config.layout.bucket)
    with ExitStack() as stack:
        starter: SyncStarter
        if config.sync_task_definition:
            ecs = service_client("ecs", config.aws)
            starter = EcsSyncStarter(
                lambda: ecs,
                config.sync_cluster,
                config.sync_task_definition,
                config.sync_subnets,
                config.sync_security_groups,
                config.sync_container,
            )
        else:
            output: IO[Any] = stack.enter_context(open(config.sync_log, "ab")) if config.sync_log else sys.stderr
            starter = ProcessSyncStarter(sync_arguments(flags), output)
        handler = PushHandler(config.mirrors, client, config.layout, secrets.of, starter)
        with binding(config):
            server = PushHTTPServer((config.host, config.port), handler)
        with server:
            url = listening_url("http", server.server_address)
            log.info("taking pushes", extra={"url": url, "mirrors": ", ".join(m.name for m in open_mirrors)})
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                log.info("stopped")  # the syncs it started go on: each has its own session
    return 0


def sync_arguments(flags: dict[str, Any]) -> list[str]:
    """The flags serve-push was given that sync takes too, for the syncs it starts."""
    taken = settings_for(SYNC)
    arguments: list[str] = []
    for name, value in flags.items():
        if value is not None and name in taken:
            setting = taken[name]
            arguments += [setting.flag] if setting.switch else [setting.flag, str(value)]
    return arguments
