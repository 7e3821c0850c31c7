"""The real ``rsync --daemon`` over the replicas: its generated rsyncd.conf, and its log as our JSON lines.

The daemon reads rsyncd.conf and the motd afresh for every connection, so a module goes from
"initialising" to served by rewriting the file (with a rename, never half-written), without a restart.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mirrorkeeper.errors import ConfigError
from mirrorkeeper.processes import stop_process

# What a read-only mirror refuses: deleting or moving its files, and following symlinks as files
# (the daemon runs without chroot, and a followed link could name a file outside the module).
REFUSED = "delete delete-* remove-source-files copy-links copy-unsafe-links copy-dirlinks"
# Already compressed: compressing them again costs the daemon CPU and saves nothing on the wire.
DONT_COMPRESS = (
    "*.gz *.tgz *.bz2 *.tbz *.xz *.txz *.zst *.lz *.lzma *.lz4 *.z *.Z *.zip *.7z *.rar *.jar *.rpm *.deb *.udeb "
    "*.apk *.iso *.img *.squashfs *.qcow2 *.vmdk *.jpg *.jpeg *.png *.gif *.webp *.mp3 *.mp4 *.mkv *.ogg *.pdf"
)
PR_SET_PDEATHSIG = 1  # prctl(2)
_LISTENING = re.compile(r"listening on port \d+")
_LOG_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\d+)\] (.*)$")
log = logging.getLogger("mirrorkeeper.rsyncd")


@dataclass(frozen=True)
class ModuleView:
    """A module as the daemon offers it: ``ready`` once its replica is complete."""

    name: str
    title: str
    path: Path
    ready: bool


def render_config(modules: Iterable[ModuleView], work: Path, empty: Path, max_connections: int, timeout: float) -> str:
    """rsyncd.conf: one read-only module per mirror; a module still initialising serves an empty
    directory and refuses every transfer with a sentence."""
    lines = [
        "# Written by mirrorkeeper serve-rsync; rewritten as replicas become ready.",
        "use chroot = no",  # not root in every container; the replica holds nothing but the mirror
        "munge symlinks = no",  # symlinks are served as the upstream wrote them
        "numeric ids = yes",
        "read only = yes",
        "write only = no",
        "list = yes",
        f"max connections = {max_connections}",
        f"lock file = {work / 'rsyncd.lock'}",
        f"timeout = {max(1, int(timeout))}",
        # A timeout makes the daemon tell the client so (MSG_IO_TIMEOUT) in a small write of its own
        # right after the checksum seed; with Nagle's algorithm that write waits for the client's
        # delayed ACK, 40 ms on Linux, at every connection (issue 15: a 100 MB pull at 0.76x a daemon
        # without the setting). The bulk data goes in 32 KB writes, which Nagle never holds back.
        # Read at start only: set on the listening socket, which each accepted connection inherits.
        "socket options = TCP_NODELAY",
        f"motd file = {work / 'motd'}",
        "log file = /dev/stdout",
        f"refuse options = {REFUSED}",
        f"dont compress = {DONT_COMPRESS}",
    ]
    for module in modules:
        lines += ["", f"[{module.name}]"]
        if module.ready:
            lines += [f"path = {module.path}", f"comment = {module.title}"]
        else:
            # The daemon runs this with sh -c; what it prints before failing is what the client is told.
            # (Module names carry no quote or shell character: config.parse_module.)
            message = f"module {module.name} is initialising its replica; try again in a few minutes"
            lines += [
                f"path = {empty}",
                f"comment = {module.title} (initialising)",
                f'pre-xfer exec = echo "{message}"; exit 1',
            ]
    return "\n".join(lines) + "\n"


def render_motd(host_name: str, modules: Iterable[ModuleView]) -> str:
    waiting = [m.name for m in modules if not m.ready]
    text = f"{host_name}: mirror served by mirrorkeeper (read-only rsync)\n"
    if waiting:
        text += f"initialising: {', '.join(waiting)} (transfers are refused until the replica is complete)\n"
    return text


def write_atomically(path: Path, text: str) -> None:
    """Readers (the daemon's next connection) see the old file or the new one, never a part."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temp.write_text(text)
    os.replace(temp, path)


class RsyncDaemon:
    """``rsync --daemon --no-detach`` with ``config``, its log lines relayed through logging."""

    def __init__(self, command: str, config: Path, host: str, port: int) -> None:
        self.command, self.config, self.host, self.port = shlex.split(command), config, host, port
        self._process: subprocess.Popen[bytes] | None = None
        self._relay: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; a ConfigError (exit 2) when the daemon cannot, with its last words."""
        args = [*self.command, "--daemon", "--no-detach", f"--config={self.config}", f"--port={self.port}"]
        if self.host not in ("0.0.0.0", "::"):
            args.append(f"--address={self.host}")
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_daemon_env(),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - started before any thread of ours
        )
        last: list[str] = []
        listening = threading.Event()
        self._relay = threading.Thread(target=self._relay_log, args=(last, listening), name="rsyncd-log", daemon=True)
        self._relay.start()
        deadline = time.monotonic() + timeout
        # Its own word, not a test connection (which it would log as a broken session).
        while not listening.wait(0.05):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(
                    f"the rsync daemon did not start listening on --host {self.host} --port {self.port}: "
                    f"{' / '.join(last[-3:]) or 'no message'}"
                )

    def _relay_log(self, last: list[str], listening: threading.Event) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if not line.strip():
                continue
            match = _LOG_LINE.match(line)
            message, fields = (match.group(2), {"pid": int(match.group(1))}) if match else (line, {})
            last[:] = [*last[-4:], message]
            if _LISTENING.search(message):
                listening.set()
            level = logging.WARNING if "error" in message.lower() or "failed" in message else logging.INFO
            log.log(level, message, extra=fields)

    @property
    def exit_code(self) -> int | None:
        """None while the daemon runs (or was never started); else how it ended."""
        return self._process.poll() if self._process is not None else None

    def stop(self) -> None:
        stop_process(self._process)
        if self._relay is not None:
            self._relay.join(2)


def _die_with_parent() -> None:
    """In the daemon, before exec: Linux stops it when serve-rsync dies, even by SIGKILL (the OOM
    killer), so no daemon goes on serving a replica that nothing keeps up to date any more."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: a stop by signal still stops the daemon (RsyncDaemon.stop)


def _daemon_env() -> dict[str, str]:
    # The log's times in UTC, like ours; the rest of the environment as given (PATH finds rsync).
    return {**os.environ, "TZ": "UTC"}
