"""``mirrorkeeper serve-http``: the mirror over HTTP, with CloudFront's semantics, straight from S3."""

from __future__ import annotations

import argparse
import logging

from mirrorkeeper.aws import s3_client
from mirrorkeeper.commands.common import add_location_flags, add_logging_flags, flags_of
from mirrorkeeper.config import load_serve_config
from mirrorkeeper.frontends.http import MirrorHTTPServer
from mirrorkeeper.frontends.served import ServedTree
from mirrorkeeper.logs import setup_logging
from mirrorkeeper.store import MirrorStore

DEFAULT_PORT = 8080
log = logging.getLogger(__name__)


def add_serve_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    """Flags both serve commands share (serve-ftp imports this), so their defaults agree."""
    group = parser.add_argument_group("listening")
    group.add_argument("--host", help="address to listen on (default: 127.0.0.1) [MIRRORKEEPER_HOST]")
    group.add_argument(
        "--port", help=f"port to listen on; 0 picks a free one (default: {default_port}) [MIRRORKEEPER_PORT]"
    )
    group.add_argument(
        "--max-connections", help="connections served at once (default: 256) [MIRRORKEEPER_MAX_CONNECTIONS]"
    )
    group.add_argument(
        "--idle-timeout", help="seconds an idle connection is kept (default: 300) [MIRRORKEEPER_IDLE_TIMEOUT]"
    )
    group.add_argument(
        "--mirror-name", help="name shown in banners and pages (default: the bucket) [MIRRORKEEPER_MIRROR_NAME]"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve-http",
        help="serve the mirror over HTTP from S3 (local runs, tests, self-hosting)",
        description="Serve the mirror's served tree over HTTP exactly as CloudFront does in AWS: GET and HEAD, "
        "ranges, upstream mtimes as Last-Modified, 304s, directory index pages, 404 for missing paths. "
        "Private state is never reachable. Runs until interrupted.",
    )
    add_location_flags(parser)
    add_serve_flags(parser, DEFAULT_PORT)
    add_logging_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_format, args.log_level)
    config = load_serve_config(flags_of(args), DEFAULT_PORT)
    client = s3_client(config.aws, pool_size=config.max_connections)
    MirrorStore(client, config.layout).check_bucket()
    tree = ServedTree(client, config.layout)
    with MirrorHTTPServer((config.host, config.port), tree, config.max_connections, config.idle_timeout) as server:
        url = f"http://{config.host}:{server.server_port}/"
        log.info("serving HTTP", extra={"url": url, "bucket": config.layout.bucket})
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log.info("stopped")  # Ctrl-C is how an operator stops a server: not a failure
    return 0
