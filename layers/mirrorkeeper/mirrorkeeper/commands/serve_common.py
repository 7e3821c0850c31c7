"""What the serve commands share: the start of their run (one place, so they agree)."""

from __future__ import annotations

import argparse
import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Protocol

from mirrorkeeper.aws import check_bucket, s3_client
from mirrorkeeper.config import SERVE_HTTP, ServeConfig, flags_of, read_config, resolve, serve_config
from mirrorkeeper.errors import ConfigError
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
    # serve-http told never to look at the sync's record (--invalidation-poll 0) is an edge that
    # hears nothing of a sync, so a republished trace must not empty its cache either.
    ignores_syncs = command == SERVE_HTTP and config.invalidation_poll <= 0
    cache = ObjectCache(config.cache_ttl, follow_republish=not ignores_syncs) if config.cache_ttl > 0 else None
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


class Listening(Protocol):
    """The settings of where a server listens (ServeConfig, PushConfig)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@contextmanager
def binding(config: Listening, port: int | None = None, flag: str = "--port") -> Iterator[None]:
    """Around making a listening socket (the server's, or ``port`` set by ``flag``): an address that
    cannot be bound is the operator's --host or port to fix, said in one line (exit 2), not a traceback."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(cannot_listen(config.host, config.port if port is None else port, exc, flag)) from None


def cannot_listen(host: str, port: int, exc: OSError, flag: str = "--port") -> str:
    """What failed and which setting to change, in one line."""
    reasons = {
        errno.EADDRINUSE: f"the port is already in use; stop what holds it or pick another {flag}",
        errno.EADDRNOTAVAIL: f"{host} is not an address of this host; fix --host (0.0.0.0 or :: listens on all)",
        errno.EACCES: f"no permission: ports below 1024 need root or CAP_NET_BIND_SERVICE; pick {flag} 1024 or above",
        errno.EAFNOSUPPORT: "this host has no IPv6; fix --host",
        socket.EAI_NONAME: f"{host} is neither an address nor a host name that resolves; fix --host",
    }
    reason = reasons.get(exc.errno or 0) or f"{exc.strerror or exc}; fix --host or {flag}"
    return f"cannot listen on --host {host} {flag} {port}: {reason}"
