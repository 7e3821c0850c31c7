"""The run report: what one sync did, kept in private state and printed at the end."""

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class SyncResult(StrEnum):
    SUCCESS = "success"
    NO_CHANGE = "no-change"
    DRY_RUN = "dry-run"
    FAILED = "failed"
    REFUSED = "refused"
    LOCKED = "locked"


def new_run_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + uuid.uuid4().hex[:6]


@dataclass
class RunReport:
    run_id: str
    upstream: str
    started: float
    finished: float = 0.0
    result: SyncResult = SyncResult.FAILED
    exit_code: int = 1
    error: str = ""
    phase: str = ""
    plan: dict[str, int] = field(default_factory=dict)
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    deleted_objects: int = 0
    repaired: int = 0  # objects uploaded again or deleted because the drift check asked (state/repair.json)
    index_pages: int = 0
    links: int = 0
    vanished: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    skipped_total: int = 0
    s3_requests: int = 0
    s3_requests_by_operation: dict[str, int] = field(default_factory=dict)
    mirror_entries: int = 0
    mirror_bytes: int = 0
    # Set when upstream listed exactly what the published manifest was made from, so this run
    # neither read the manifest nor planned: the run that published it (its report lists the
    # skipped names).
    unchanged_since: str = ""

    @property
    def duration(self) -> float:
        return round(max(self.finished - self.started, 0.0), 3)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["duration"] = self.duration
        doc["started_iso"] = _iso(self.started)
        doc["finished_iso"] = _iso(self.finished)
        return doc

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False).encode()


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if epoch else ""
