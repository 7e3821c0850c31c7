"""Logs a human can read on a terminal and JSON a machine can read everywhere else.

Structured fields travel in ``extra=``; the JSON formatter emits them as keys, the text
formatter appends them as ``key=value``.
"""

import json
import logging
import sys
import threading
import time
from typing import IO, Any

from mirrorkeeper.names import printable

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = (
            f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} {record.getMessage()}"
        )
        # A name from upstream may carry terminal escapes: shown, never obeyed.
        line = printable(f"{line}  {extras}" if extras else line)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(fmt: str = "auto", level: str = "INFO", stream: IO[str] | None = None) -> bool:
    """Configure the root logger; returns True when the output is an interactive terminal."""
    stream = stream or sys.stderr
    interactive = stream.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not interactive)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return interactive and not use_json


class Progress:
    """Files and bytes done against a total, with rate and ETA.

    On a terminal it redraws one status line; otherwise it logs a structured ``progress`` record
    at most every ``interval`` seconds, which is what CloudWatch Logs wants.
    """

    def __init__(
        self,
        label: str,
        total_files: int,
        total_bytes: int,
        interactive: bool,
        interval: float = 10.0,
        stream: IO[str] | None = None,
    ) -> None:
        self.label, self.total_files, self.total_bytes = label, total_files, total_bytes
        self.interactive, self.interval = interactive, interval
        self.stream = stream or sys.stderr
        self.files = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._log = logging.getLogger("mirrorkeeper.progress")

    def advance(self, files: int, size: int) -> None:
        with self._lock:
            self.files += files
            self.bytes += size
            now = time.monotonic()
            if now - self._last >= (0.2 if self.interactive else self.interval):
                self._last = now
                self._emit(now)

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.bytes / elapsed
        remaining = max(self.total_bytes - self.bytes, 0)
        return {
            "phase": self.label,
            "files_done": self.files,
            "files_total": self.total_files,
            "bytes_done": self.bytes,
            "bytes_total": self.total_bytes,
            "bytes_per_second": round(rate),
            "eta_seconds": round(remaining / rate) if rate > 0 else None,
        }

    def _emit(self, now: float) -> None:
        snap = self.snapshot()
        if self.interactive:
            eta = "?" if snap["eta_seconds"] is None else f"{snap['eta_seconds']}s"
            pct = 100.0 * self.bytes / self.total_bytes if self.total_bytes else 100.0
            self.stream.write(
                f"\r{self.label}: {self.files}/{self.total_files} files, {_mib(self.bytes)}/"
                f"{_mib(self.total_bytes)} ({pct:.0f}%), {_mib(snap['bytes_per_second'])}/s, ETA {eta}  "
            )
            self.stream.flush()
        else:
            self._log.info("progress", extra=snap)

    def finish(self) -> None:
        with self._lock:
            if self.interactive and self.files:
                self._emit(time.monotonic())
                self.stream.write("\n")
                self.stream.flush()


def _mib(size: float) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"
