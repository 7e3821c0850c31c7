"""What ``serve-http`` and ``serve-ftp`` share: the start of their run (one place, so they agree)."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from typing import Any

from mirrorkeeper.aws import check_bucket, s3_client
from mirrorkeeper.config import ServeConfig, flags_of, read_config, resolve, serve_config
from mirrorkeeper.logs import setup_logging
from mirrorkeeper.serve.served import EdgeWatch, EdgeWatches, ObjectCache, ServedTree
from mirrorkeeper.state import StateStore


def start_serving(command: str, args: argparse.Namespace) -> tuple[ServeConfig, ServedTree]:
    """Settings, logging, a checked bucket and the served tree: the first steps of every serve command."""
    flags = flags_of(args)
    values = resolve(command, flags)
    config = serve_config(values)
    setup_logging(values["log_format"], values["log_level"])
    client = s3_client(config.aws, pool_size=config.max_connections)
    check_bucket(client, config.layout.bucket)
    cache = ObjectCache(config.cache_ttl) if config.cache_ttl > 0 else None
    watch = None
    if cache is not None and config.invalidation_poll > 0:
        # Each mirror of the host keeps its own record of what its syncs invalidated.
        paths = list(read_config(command, flags, os.environ).served_paths.values()) or [""]
        watch = EdgeWatches(
            config.layout.served_prefix,
            {
                path: EdgeWatch(StateStore(client, replace(config.layout, path=path)), cache, config.invalidation_poll)
                for path in paths
            },
        )
    return config, ServedTree(client, config.layout, cache, watch)


def listening_url(scheme: str, address: tuple[Any, ...]) -> str:
    """The URL a server bound to ``address`` (a socket address) answers on; an IPv6 host in brackets."""
    host, port = address[0], address[1]
    return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"
