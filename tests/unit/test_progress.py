"""Progress: a redrawn status line on a terminal, structured records otherwise."""

import io
import logging

import pytest

from mirrorkeeper.logs import JsonFormatter, Progress


def test_terminal_progress_shows_files_bytes_rate_and_eta() -> None:
    screen = io.StringIO()
    progress = Progress("data", total_files=4, total_bytes=4 * 1024 * 1024, interactive=True, stream=screen)
    progress.advance(1, 1024 * 1024)
    progress.finish()
    line = screen.getvalue().strip().splitlines()[-1]
    assert "data: 1/4 files, 1.0 MiB/4.0 MiB (25%)" in line and "MiB/s" in line and "ETA" in line


def test_non_terminal_progress_is_a_structured_record(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress("data", total_files=2, total_bytes=200, interactive=False, interval=0)
    with caplog.at_level(logging.INFO, logger="mirrorkeeper.progress"):
        progress.advance(1, 100)
    record = caplog.records[-1]
    doc = JsonFormatter().format(record)
    assert '"files_done": 1' in doc and '"bytes_total": 200' in doc and '"phase": "data"' in doc
