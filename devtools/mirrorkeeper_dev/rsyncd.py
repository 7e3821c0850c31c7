"""A real rsync daemon on loopback serving one directory: the demo's upstream and the tests'."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from mirrorkeeper.errors import UpstreamError
from mirrorkeeper.processes import stop_process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RsyncDaemon:
    """``root`` served as ``module``; ``more`` serves further modules ({name: directory}) from the same daemon."""

    def __init__(
        self,
        root: Path,
        module: str = "mirror",
        port: int | None = None,
        rsync: str = "rsync",
        more: dict[str, Path] | None = None,
    ) -> None:
        self.root, self.module, self.rsync = Path(root), module, rsync
        self.modules = {module: Path(root), **{name: Path(path) for name, path in (more or {}).items()}}
        self.port = port or free_port()
        self._dir: Path | None = None  # config and log, from start() until stop()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_of(self.module)

    def url_of(self, module: str) -> str:
        return f"rsync://127.0.0.1:{self.port}/{module}/"

    def start(self) -> "RsyncDaemon":
        self._dir = Path(tempfile.mkdtemp(prefix="rsyncd-"))
        config, log = self._dir / "rsyncd.conf", self._dir / "rsyncd.log"
        # use chroot = no: we are not root everywhere; munge symlinks = no: serve links as they are.
        modules = "".join(
            f"[{name}]\npath = {path}\nread only = yes\nlist = yes\n" for name, path in self.modules.items()
        )
        config.write_text(f"use chroot = no\nmunge symlinks = no\nmax connections = 64\nlog file = {log}\n{modules}")
        self._process = subprocess.Popen(
            [self.rsync, "--daemon", "--no-detach", f"--config={config}", f"--port={self.port}", "--address=127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                message = f"rsync daemon exited with {self._process.returncode}: {_tail(log)}"
                self.stop()
                raise UpstreamError(message)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise UpstreamError(f"rsync daemon did not listen on port {self.port} within 10 s")

    @contextmanager
    def hung(self) -> Iterator[None]:
        """Inside the block the daemon is frozen (SIGSTOP): the kernel still accepts connections, nobody
        answers them. Sessions already running are not affected."""
        assert self._process is not None, "start() first"
        os.kill(self._process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self._process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the daemon and remove its config and log."""
        stop_process(self._process)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "RsyncDaemon":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _tail(log: Path) -> str:
    """The last lines of the daemon's log, for an error message that outlives the log file."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " / ".join(lines[-3:])[-600:] or "empty log"
