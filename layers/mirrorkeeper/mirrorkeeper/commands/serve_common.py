"""What ``serve-http`` and ``serve-ftp`` share: their flags and the start of their run (one place, so they agree)."""

from __future__ import annotations

import argparse

from mirrorkeeper.aws import check_bucket, s3_client
from mirrorkeeper.commands.common import flags_of
from mirrorkeeper.config import ServeConfig, load_serve_config
from mirrorkeeper.logs import setup_logging
from mirrorkeeper.serve.served import ObjectCache, ServedTree


def add_serve_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    """Flags both serve commands share, so their defaults agree."""
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
    group.add_argument(
        "--cache-ttl",
        help="seconds an object read from S3 may be reused, at most (objects' own Cache-Control can only "
        "shorten it; the trace file is never reused); 0 turns the cache off (default: 10) [MIRRORKEEPER_CACHE_TTL]",
    )


def start_serving(args: argparse.Namespace, default_port: int) -> tuple[ServeConfig, ServedTree]:
    """Logging, settings, a checked bucket and the served tree: the first steps of every serve command."""
    setup_logging(args.log_format, args.log_level)
    config = load_serve_config(flags_of(args), default_port)
    client = s3_client(config.aws, pool_size=config.max_connections)
    check_bucket(client, config.layout.bucket)
    cache = ObjectCache(config.cache_ttl) if config.cache_ttl > 0 else None
    return config, ServedTree(client, config.layout, cache)
