"""``mirrorkeeper serve-rsync``: the mirror over rsync, for the mirrors that mirror us.

rsync cannot read S3, so each mirror is kept as a local replica (:mod:`mirrorkeeper.serve.replica`),
and Debian's ``rsync --daemon`` serves it (:mod:`mirrorkeeper.serve.rsyncd`).
"""

from __future__ import annotations

import argparse
import logging
import threading

from mirrorkeeper.aws import check_bucket, s3_client, service_client
from mirrorkeeper.commands.serve_common import binding, listening_url
from mirrorkeeper.config import SERVE_RSYNC, RsyncServeConfig, add_flags, flags_of, load_rsync_serve_config, resolve
from mirrorkeeper.errors import DaemonStoppedError, ReplicaFullError, StorageError
from mirrorkeeper.logs import setup_logging
from mirrorkeeper.serve.readiness import Readiness, ReadinessServer
from mirrorkeeper.serve.replica import REPLICA_DIR, Replica
from mirrorkeeper.serve.rsyncd import ModuleView, RsyncDaemon, render_config, render_motd, write_atomically
from mirrorkeeper.serve.wake import WakeQueue
from mirrorkeeper.sockets import listening_socket

log = logging.getLogger(__name__)

DESCRIPTION = """\
Serve the mirror over rsync: one read-only module per mirror (--module for a single mirror, else
each mirror of the --config file under its path), served by the real rsync daemon from a local
replica of the served tree. The replica is built from the manifest (files already present with the
right size and mtime are kept, so a restart resumes), then follows it: every --poll-interval the
manifest's version is looked at (at once when --wake-queue-url receives a sync's completion), and a
new version becomes a new snapshot that fetches only what changed and replaces the served one in one
step. Until a module's first build is complete it answers with an 'initialising' notice and refuses
transfers, and --health-port answers 503 (200 once every module is served and the daemon runs).

Exit codes: 1 when a replica directory has no room for the manifest's files, or the rsync daemon
stops on its own; 2 for a setting to fix (an address that cannot be bound, an unreadable wake-up
queue). Runs until interrupted (exit 0).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        SERVE_RSYNC,
        help="serve the mirror over rsync from a local replica kept in step with S3",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, SERVE_RSYNC)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    flags = flags_of(args)
    values = resolve(SERVE_RSYNC, flags)
    setup_logging(values["log_format"], values["log_level"])
    config = load_rsync_serve_config(flags)
    client = s3_client(config.aws, pool_size=config.download_concurrency + 2)
    check_bucket(client, config.modules[0].layout.bucket)
    replicas = [
        Replica(client, module, config.replica_dir, config.download_concurrency, config.replica_reserve)
        for module in config.modules
    ]
    server = Server(config, replicas)
    try:
        server.start()
        if config.wake_queue_url:
            WakeQueue(service_client("sqs", config.aws), config.wake_queue_url, server.nudged).start()
        log.info(
            "serving rsync",
            extra={
                "url": listening_url("rsync", (config.host, server.port)),
                "modules": [m.name for m in config.modules],
            },
        )
        server.follow()
    except KeyboardInterrupt:
        log.info("stopped")  # Ctrl-C or SIGTERM is how a server is stopped: not a failure
    finally:
        server.stop()
    return 0


class Server:
    """The daemon and the replicas it serves, following the manifests."""

    def __init__(self, config: RsyncServeConfig, replicas: list[Replica]) -> None:
        self.config, self.replicas = config, replicas
        self.work = config.replica_dir.resolve() / REPLICA_DIR
        self.empty = self.work / "empty"
        self.port = config.port
        self.daemon = RsyncDaemon(config.rsync_command, self.work / "rsyncd.conf", config.host, config.port)
        self.nudged = threading.Event()  # set when a sync ended: look at the manifests now
        self._health: ReadinessServer | None = None
        self._shown: list[bool] = []

    def start(self) -> None:
        self.empty.mkdir(parents=True, exist_ok=True)
        self._offer()
        # One line naming --host / --port when the address cannot be had; and a port of 0 picks a free
        # one, which rsync cannot report: find it here.
        with binding(self.config), listening_socket(self.config.host, self.config.port) as probe:
            self.port = probe.getsockname()[1]
        self.daemon.port = self.port
        self.daemon.start()
        if self.config.health_port is not None:
            health = (self.config.host, self.config.health_port)
            with binding(self.config, port=self.config.health_port, flag="--health-port"):
                self._health = ReadinessServer(health, self.readiness)
            self._health.start()

    def readiness(self) -> Readiness:
        return Readiness({r.module.name: r.ready for r in self.replicas}, self.daemon.exit_code is None)

    def follow(self) -> None:
        while True:
            self.nudged.clear()  # a nudge that comes while this look runs asks for one more after it
            for replica in self.replicas:
                self._update(replica)
            self._offer()
            self.nudged.wait(self.config.poll_interval)
            if (code := self.daemon.exit_code) is not None:
                raise DaemonStoppedError(
                    f"the rsync daemon exited with code {code} (its log is above); serve-rsync stops so that it "
                    "is started again"
                )

    def stop(self) -> None:
        if self._health is not None:
            self._health.shutdown()
            self._health.server_close()
        self.daemon.stop()

    def _update(self, replica: Replica) -> None:
        """A failed first build ends the command (one line; nothing half-built is ever offered); a failed
        update leaves the last complete snapshot served, and the next poll tries again."""
        try:
            replica.update()
        except (ReplicaFullError, StorageError) as exc:
            if not replica.ready:
                raise
            log.error(
                "replica not updated; still serving the last one",
                extra={"rsync_module": replica.module.name, "error": str(exc)},
            )

    def _offer(self) -> None:
        """Rewrite rsyncd.conf and the motd when a module became ready."""
        views = [ModuleView(r.module.name, r.module.title, r.link, r.ready) for r in self.replicas]
        shown = [view.ready for view in views]
        if shown == self._shown:
            return
        write_atomically(self.work / "motd", render_motd(self.config.host_name, views))
        write_atomically(
            self.daemon.config,
            render_config(views, self.work, self.empty, self.config.max_connections, self.config.idle_timeout),
        )
        self._shown = shown
