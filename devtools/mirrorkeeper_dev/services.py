"""Local processes the demo (and the tests) start and stop: a command serving on a port."""

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from mirrorkeeper.errors import MirrorkeeperError
from mirrorkeeper.processes import stop_process
from mirrorkeeper_dev.rsyncd import free_port


class ServiceStartError(MirrorkeeperError):
    """A local service did not start listening; the message carries its stderr."""


def wait_for_port(
    port: int,
    process: "subprocess.Popen[bytes]",
    timeout: float,
    what: str,
    log: IO[bytes] | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Until ``process`` accepts connections on ``host``:``port``; kills it and raises
    ServiceStartError (with the tail of ``log``, its stderr, when given) if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(5)
                err = ""
                if log is not None:
                    log.seek(0)
                    err = ": " + log.read()[-800:].decode(errors="replace")
                raise ServiceStartError(f"{what} did not start listening on {host} port {port}{err}") from None
            time.sleep(0.05)


@contextmanager
def serving(
    args: Sequence[str],
    port: int,
    env: Mapping[str, str] | None = None,
    what: str = "",
    timeout: float = 20,
    host: str = "127.0.0.1",
) -> Iterator["subprocess.Popen[bytes]"]:
    """Run ``args`` (which must listen on ``host``:``port``) until the block ends."""
    # stderr to a file, not a pipe: a chatty server must never block on a full pipe.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            list(args), env=dict(env) if env is not None else None, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            wait_for_port(port, process, timeout, what or args[0], log, host)
            yield process
        finally:
            stop_process(process, grace=10)


@contextmanager
def moto_subprocess() -> Iterator[str]:
    """``python -m moto.server`` on 127.0.0.1 as a process of its own (AWS for the demo and the tests,
    over the same HTTP code path as production); yields its URL. Its state is its own: resetting
    another moto server (``POST /moto-api/reset``) leaves it alone."""
    port = free_port()
    with serving([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port, what="moto"):
        yield f"http://127.0.0.1:{port}"


def wait_for_replicas(server: "subprocess.Popen[bytes]", links: Sequence[Path], timeout: float = 600) -> None:
    """Until serve-rsync (``server``) serves every module's complete replica: a module's link in the
    replica directory appears when its first build ends (docs/rsync.md); until then the module is
    'initialising' and refuses transfers. ServiceStartError when serve-rsync exits first (a first
    build that fails ends it) or the builds outlast ``timeout``."""
    deadline = time.monotonic() + timeout
    while not all(link.is_symlink() for link in links):
        if server.poll() is not None:
            raise ServiceStartError(f"serve-rsync exited {server.returncode} before its replicas were built")
        if time.monotonic() > deadline:
            raise ServiceStartError(f"serve-rsync had not built its replicas after {timeout:.0f} s")
        time.sleep(0.1)
