"""Ending a child process we started (the rsync daemon, a server under test): one way, everywhere."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any] | None, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL once ``grace`` seconds have passed, so that a child that ignores or
    outlasts the first still ends; a process already ended (or None) is left as it is."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
