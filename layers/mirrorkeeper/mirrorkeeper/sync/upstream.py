"""What upstream says about itself: its trace file and the signs of an update in progress.

Debian's ftpsync writes ``project/trace/<host>`` last, after everything it publishes, so an
unchanged trace means an unchanged archive: a run fetches just that file first and ends there when
it is byte-identical to the one the last successful run saw (and upstream was listed in full
recently enough). ftpsync also keeps ``Archive-Update-in-Progress-<host>`` at the archive's root
while it updates; a mirror that copies then copies a half-updated archive. So that marker, a marker
the operator names, or a trace that changes while we fetch means "busy": publish nothing beyond
data, wait, try again.
"""

from __future__ import annotations

import calendar
import email.utils
import hashlib
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.errors import StagingFullError, UpstreamError
from mirrorkeeper.sync.rsync import RsyncClient

TRACE_LIMIT = 64 * 1024  # a trace is a few hundred bytes; anything this big is not one
BUSY_PREFIX = "Archive-Update-in-Progress-"
_SERIAL = re.compile(rb"^Archive serial:\s*(\S+)\s*$", re.MULTILINE)
_DATE = re.compile(rb"^Date:\s*(.+?)\s*$", re.MULTILINE)
_EPOCH = re.compile(rb"^Epoch:\s*(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class UpstreamTrace:
    path: str
    body: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def serial(self) -> str:
        """ftpsync's ``Archive serial:`` (Debian's dinstall serial), '' when the trace has none."""
        found = _SERIAL.search(self.body)
        return found.group(1).decode("utf-8", "replace") if found else ""

    @property
    def date(self) -> float | None:
        """Upstream's own time in the trace: ``Date:`` (RFC 2822), ``Epoch:``, a first line in
        ``date -u`` form (ftpsync), or a first token of epoch seconds (TIME, timestamp files)."""
        found = _DATE.search(self.body)
        if found:
            try:
                return email.utils.parsedate_to_datetime(found.group(1).decode("ascii")).timestamp()
            except (TypeError, ValueError, UnicodeDecodeError):
                pass
        epoch = _EPOCH.search(self.body)
        if epoch:
            return float(epoch.group(1))
        first = self.body.split(b"\n", 1)[0].strip()
        try:
            return float(calendar.timegm(time.strptime(first.decode("ascii"), "%a %b %d %H:%M:%S UTC %Y")))
        except (ValueError, UnicodeDecodeError):
            pass
        token = first.split()[0] if first.split() else b""
        return float(token) if token.isdigit() and len(token) <= 12 else None

    def summary(self) -> dict[str, Any]:
        """What the run report and the status page say of it."""
        return {"path": self.path, "sha256": self.sha256, "serial": self.serial, "date": self.date}


def read_trace(path: str, file: Path) -> UpstreamTrace | str:
    """The trace fetched to ``file``, or why it cannot be one (what the run report says)."""
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        return f"upstream has no {path} (or it is over {TRACE_LIMIT // 1024} KiB)"
    if size > TRACE_LIMIT:
        return f"{path} is {size} bytes, not a trace (over {TRACE_LIMIT // 1024} KiB)"
    body = file.read_bytes()
    if b"\0" in body:
        return f"{path} is binary (it holds NUL bytes), not a trace"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return f"{path} is not text (not UTF-8), not a trace"
    return UpstreamTrace(path, body)


def fetch_trace(rsync: RsyncClient, upstream: str, path: str, staging: Path | None) -> UpstreamTrace | str:
    """Fetch upstream's trace (one small file, rsync's --max-size keeping a huge one out): the trace,
    or the sentence saying why there is none this run."""
    with tempfile.TemporaryDirectory(prefix="mirrorkeeper-trace-", dir=staging) as scratch:
        dest = Path(scratch) / "trace"
        try:
            result = rsync.fetch(upstream, [path], dest, f"--max-size={TRACE_LIMIT}")
        except (UpstreamError, StagingFullError) as exc:
            return f"cannot fetch {path}: {exc}"
        if path in result.failed:
            return f"upstream will not send {path}: {result.failed[path]}"
        return read_trace(path, dest / path)


def why_not_a_trace(problem: str, path: str, entries: list[Entry]) -> str:
    """``problem`` made precise by the listing, once there is one: a missing file versus a huge one."""
    listed = next((e for e in entries if e.path == path), None)  # once, on a run that lists anyway
    if listed is None:
        return f"upstream lists no {path}"
    if listed.type is not EntryType.FILE:
        return f"{path} is a {'directory' if listed.type is EntryType.DIR else 'symlink'}, not a file"
    if listed.size > TRACE_LIMIT:
        return f"{path} is {listed.size} bytes, not a trace (over {TRACE_LIMIT // 1024} KiB)"
    return problem


def busy_signs(entries: list[Entry], marker: str) -> list[str]:
    """What in the listing says upstream is mid-update: ftpsync's marker at the root, the operator's."""
    signs = [f"{e.path} at upstream's root" for e in entries if "/" not in e.path and e.path.startswith(BUSY_PREFIX)]
    if marker and any(e.path == marker for e in entries):
        signs.append(f"the busy marker {marker}")
    return signs
