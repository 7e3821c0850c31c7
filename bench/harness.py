"""Processes the benchmark measures and the servers it measures them against.

Every measured command runs in its own session, started by a small launcher process: wall time
comes from the monotonic clock around it, CPU time and peak RSS from ``os.wait4`` (on Linux the
maximum over the process and the children it reaped, e.g. mirrorkeeper's rsync), and a deadline
kills the whole session.

The moto server runs in a separate process so that its memory never counts as the client's, and
so the client competes with it for the CPU exactly as it would with any local S3 endpoint. Its
request log (one werkzeug line per HTTP request) is how requests of clients that do not count
their own (``aws s3 sync``) are counted.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from mirrorkeeper.processes import stop_process
from mirrorkeeper_dev import services
from mirrorkeeper_dev.rsyncd import free_port

# 127.0.0.1 - - [25/Nov/2026 17:43:59] "PUT /bucket/key HTTP/1.1" 200 -
# werkzeug colours the request of some answers (206, 304, 4xx) with ANSI escapes, even into a file.
_ESCAPES = rb"(?:\x1b\[[\d;]*m)*"
_REQUEST_LINE = re.compile(rb'\] "' + _ESCAPES + rb"(?P<method>[A-Z]+) \S+ HTTP/[\d.]+" + _ESCAPES + rb'" \d{3} ')


def compile_mirrorkeeper() -> None:
    """Write mirrorkeeper's bytecode, as pip does when it installs the package (the image, the layer).

    The benchmark runs the editable checkout; under PYTHONDONTWRITEBYTECODE (set on these machines)
    every measured run would otherwise compile each of its modules from source, about 30 ms per
    run, which no deployment pays."""
    import compileall

    import mirrorkeeper

    if not compileall.compile_dir(Path(mirrorkeeper.__file__).parent, quiet=1):
        raise BenchError("could not compile the mirrorkeeper package")


class BenchError(RuntimeError):
    """A measured step failed or produced something other than what the benchmark expects."""


@dataclass(frozen=True)
class Measured:
    """One finished process: how long it took, its peak RSS and what it printed."""

    args: tuple[str, ...]
    wall: float
    cpu: float  # user + system seconds of the process and the children it waited for
    max_rss_kib: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def max_rss_mib(self) -> float:
        return self.max_rss_kib / 1024

    def check(self, what: str) -> Measured:
        if self.returncode != 0:
            tail = " / ".join(line for line in self.stderr.strip().splitlines()[-5:] if line.strip())
            raise BenchError(f"{what} exited {self.returncode}: {tail[-800:] or 'no message'}")
        return self


# Measures one command from a small process. Not from the benchmark itself: Linux records the RSS
# high-water mark of the memory a process had before exec (for a child of this process: all of this
# process's pages, trees and boto3 included) in the ru_maxrss that wait4 reports. This launcher
# (python -S, a few MiB) makes that floor small. It writes "wall max_rss_kib cpu_seconds" to argv[1].
_LAUNCHER = """
import os, sys, time
started = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - started
with open(sys.argv[1], "w") as out:
    out.write(f"{wall} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(
    args: Sequence[str], env: Mapping[str, str], workdir: Path, timeout: float, cwd: Path | None = None
) -> Measured:
    """Run ``args`` to completion (killed after ``timeout`` seconds) and measure it."""
    out_path, err_path, usage_path = workdir / "last.stdout", workdir / "last.stderr", workdir / "last.usage"
    usage_path.unlink(missing_ok=True)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-S", "-E", "-c", _LAUNCHER, str(usage_path), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # a deadline or Ctrl-C kills the command's children (rsync) too
        )
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_session(process.pid)
            process.wait()
            raise BenchError(f"{args[0]} did not finish within {timeout:.0f} s and was killed") from None
        except BaseException:
            _kill_session(process.pid)
            process.wait()
            raise
    try:
        wall, max_rss, cpu = usage_path.read_text().split()
    except (OSError, ValueError):
        raise BenchError(f"could not start {args[0]} (exit {returncode}): {err_path.read_text()[-400:]}") from None
    return Measured(
        args=tuple(args),
        wall=float(wall),
        cpu=float(cpu),
        max_rss_kib=int(max_rss),
        returncode=returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux's /proc/PID/stat; the
    fields after the command's closing parenthesis start at the third, so utime and stime are 11, 12)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, limit: float = 30) -> None:
    try:
        services.wait_for_port(port, process, limit, what)
    except services.ServiceStartError as exc:
        raise BenchError(str(exc)) from None


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1 in its own process, its request log in ``workdir``."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.log_path = workdir / "moto.log"
        self._env = dict(env)
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() first"
        return self._process.pid

    def start(self) -> MotoServer:
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self._env,
                cwd=self._workdir,
                start_new_session=True,
            )
        wait_for_port(self.port, self._process, "the moto server")
        return self

    def stop(self) -> None:
        stop_process(self._process, grace=10)

    def reset(self) -> None:
        """Drop every bucket and object (frees the server's memory between runs)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    def log_offset(self) -> int:
        """Where the request log ends now: pass it to ``requests_since`` after a step."""
        self._settle()
        return self.log_path.stat().st_size

    def requests_since(self, offset: int, method: str = "") -> int:
        """HTTP requests (of ``method`` alone, when given) the server logged since ``offset`` (werkzeug
        logs each after answering it)."""
        self._settle()
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            found = (_REQUEST_LINE.search(line) for line in log)
            return sum(1 for match in found if match and method in ("", match["method"].decode()))

    def _settle(self, quiet: float = 0.3, limit: float = 10.0) -> None:
        """Wait until the log stops growing: the last answer's line may trail the answer itself."""
        deadline = time.monotonic() + limit
        size = self.log_path.stat().st_size
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.log_path.stat().st_size
            if now == size:
                return
            size = now

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_in_workdir(name: str, bench: Callable[[Path], list[str]]) -> int:
    """Run ``bench`` in a temporary directory of its own (removed afterwards), then print the lines it
    returns and the machine's load around it; a BenchError is one line and exit 1."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"mirrorkeeper-bench-{name}-") as work:
        workdir = Path(work)
        (workdir / "tmp").mkdir()
        try:
            lines = bench(workdir)
        except BenchError as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 1
    print(
        "\n".join(["", *lines, f"(1-minute load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)"])
    )
    return 0
