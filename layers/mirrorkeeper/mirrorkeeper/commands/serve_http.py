"""``mirrorkeeper serve-http``: the mirror over HTTP, with CloudFront's semantics, straight from S3."""

from __future__ import annotations

import argparse
import logging

from mirrorkeeper.commands.serve_common import binding, listening_url, start_serving
from mirrorkeeper.config import SERVE_HTTP, add_flags
from mirrorkeeper.serve.http import MirrorHTTPServer

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve-http",
        help="serve the mirror over HTTP from S3 (local runs, tests, self-hosting)",
        description="Serve the mirror's served tree over HTTP exactly as CloudFront does in AWS: GET and HEAD, "
        "ranges, upstream mtimes as Last-Modified, 304s, directory index pages, 404 for missing paths. "
        "Private state is never reachable. Runs until interrupted.",
    )
    add_flags(parser, SERVE_HTTP)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config, tree = start_serving(SERVE_HTTP, args)
    with binding(config):
        server = MirrorHTTPServer(
            (config.host, config.port),
            tree,
            max_connections=config.max_connections,
            max_connections_per_ip=config.max_connections_per_ip,
            idle_timeout=config.idle_timeout,
            header_timeout=config.header_timeout,
        )
    with server:
        url = listening_url("http", server.server_address)
        log.info("serving HTTP", extra={"url": url, "bucket": config.layout.bucket})
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log.info("stopped")  # Ctrl-C is how an operator stops a server: not a failure
    return 0
