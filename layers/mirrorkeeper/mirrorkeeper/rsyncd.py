"""A real rsync daemon on loopback serving one directory: the demo's upstream and the tests'."""

import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from mirrorkeeper.errors import UpstreamError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RsyncDaemon:
    def __init__(self, root: Path, module: str = "mirror", port: int | None = None, rsync: str = "rsync") -> None:
        self.root, self.module, self.rsync = Path(root), module, rsync
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="rsyncd-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rsync://127.0.0.1:{self.port}/{self.module}/"

    def start(self) -> "RsyncDaemon":
        config = self._dir / "rsyncd.conf"
        # use chroot = no: we are not root everywhere; munge symlinks = no: serve links as they are.
        config.write_text(
            f"use chroot = no\nmunge symlinks = no\nmax connections = 64\nlog file = {self._dir / 'rsyncd.log'}\n"
            f"[{self.module}]\npath = {self.root}\nread only = yes\nlist = yes\n"
        )
        self._process = subprocess.Popen(
            [self.rsync, "--daemon", "--no-detach", f"--config={config}", f"--port={self.port}", "--address=127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise UpstreamError(f"rsync daemon exited with {self._process.returncode}; see {self._dir}/rsyncd.log")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise UpstreamError(f"rsync daemon did not listen on port {self.port} within 10 s")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> "RsyncDaemon":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
