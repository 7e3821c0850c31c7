"""Ending a child process (mirrorkeeper.processes): real children, one polite and one that ignores
SIGTERM."""

import signal
import subprocess
import sys
import time

from mirrorkeeper.processes import stop_process

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_child_ends_on_sigterm_and_one_that_ignores_it_is_killed_after_the_grace() -> None:
    polite = subprocess.Popen(["sleep", "60"])
    stubborn = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"  # its handler is set
    stop_process(polite)
    assert polite.returncode == -signal.SIGTERM
    started = time.monotonic()
    stop_process(stubborn, grace=0.5)
    assert stubborn.returncode == -signal.SIGKILL and time.monotonic() - started >= 0.5
    stubborn.stdout.close()
    # AND an ended process, or none, is left alone
    stop_process(polite)
    stop_process(None)
    assert polite.returncode == -signal.SIGTERM
