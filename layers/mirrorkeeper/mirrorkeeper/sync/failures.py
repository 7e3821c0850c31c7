"""What one run could not publish, and why: paths upstream would not send, objects S3 would not
take, index files held back because a file they name is among those. Upload threads add to it.

At the end of the run it settles the failure log (``state/failures.json``): a path that failed the
same way in ``quarantine_after`` runs in a row is quarantined (skipped by later runs, tried again
daily), one that arrived is forgotten. The run exits 5 ("partial") when a path failed that was
not already quarantined.
"""

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from mirrorkeeper.names import printable
from mirrorkeeper.state import FailureLog, RunReport

log = logging.getLogger(__name__)

REPORT_LIMIT = 200  # paths listed in a report; the totals count them all
RETRY_QUARANTINED_EVERY = 86400.0
# A store that refuses more objects than this in one run is not refusing objects: it is failing.
STORE_REFUSALS_BEFORE_GIVING_UP = 50


@dataclass
class RunFailures:
    log: FailureLog
    now: float
    quarantine_after: int
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason, this run
    held: dict[str, str] = field(default_factory=dict)  # index path -> the failed path it names
    skipped_quarantined: list[str] = field(default_factory=list)
    store_refusals: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # Quarantined before this run (and so already alerted): what this run quarantines still counts.
        self._known = set(self.log.quarantined())
        self.stored = bool(self.log.paths)  # whether state/failures.json exists, so a clean run leaves it be

    def skip_quarantined(self, path: str) -> bool:
        """True (and noted) when ``path`` is quarantined and its daily retry is not due."""
        if self.log.skip_now(path, self.now, RETRY_QUARANTINED_EVERY):
            self.skipped_quarantined.append(path)
            return True
        return False

    def add(self, path: str, reason: str, by_store: bool = False) -> bool:
        """Note that ``path`` was not published this run. False when the store refused too many objects
        to go on (the caller then stops the run)."""
        with self._lock:
            self.failed[path] = reason
            if by_store:
                self.store_refusals += 1
        log.warning("skipped for this run: %s", reason, extra={"path": printable(path)})
        return self.store_refusals <= STORE_REFUSALS_BEFORE_GIVING_UP

    def hold_index(self, path: str, because: str) -> None:
        with self._lock:
            self.held[path] = because
        log.warning(
            "index file held back: a file it names was not published",
            extra={"path": printable(path), "because": printable(because)},
        )

    def blocking(self) -> set[str]:
        """Paths an index must not name to be published: failed ones and held indexes."""
        with self._lock:
            return {*self.failed, *self.held}

    @property
    def partial(self) -> bool:
        """Something failed this run that was not quarantined (and alerted) before it."""
        return any(path not in self._known for path in (*self.failed, *self.held))

    def settle(self, arrived: Iterable[str], gone_upstream: Iterable[str]) -> list[str]:
        """Update the failure log with this run; returns the paths newly quarantined."""
        self.log.forget(arrived)
        self.log.forget(gone_upstream)
        return [
            path
            for path, reason in sorted(self.failed.items())
            if self.log.record(path, reason, self.now, self.quarantine_after)
        ]

    def report(self, report: RunReport, newly_quarantined: list[str]) -> None:
        report.failed = [{"path": p, "reason": r} for p, r in sorted(self.failed.items())[:REPORT_LIMIT]]
        report.failed_total = len(self.failed)
        report.held_indexes = [{"path": p, "because": b} for p, b in sorted(self.held.items())[:REPORT_LIMIT]]
        report.quarantined = [
            {"path": p, "reason": f.reason, "since": f.quarantined}
            for p, f in sorted(self.log.quarantined().items())[:REPORT_LIMIT]
        ]
        report.newly_quarantined = newly_quarantined[:REPORT_LIMIT]

    def summary(self) -> str:
        """One sentence for the run's last line."""
        first = next(iter(sorted(self.failed.items())), None) or next(iter(sorted(self.held.items())), None)
        detail = f" (first: {printable(first[0])}: {first[1]})" if first else ""
        skipped = f"{len(self.failed)} {'path was' if len(self.failed) == 1 else 'paths were'} skipped"
        if self.held:
            files = "file" if len(self.held) == 1 else "files"
            skipped += f" and {len(self.held)} index {files} that name them held back"
        quarantined = [p for p in self.failed if p in self.log.quarantined() and p not in self._known]
        retried = (
            f"; {len(quarantined)} of them failed {self.quarantine_after} runs in a row and are quarantined: retried "
            "daily, not every run"
            if quarantined
            else ""
        )
        return (
            f"published, but {skipped}{detail}; they keep their published copy and the next run retries them"
            f"{retried} (the run report lists them all)"
        )
