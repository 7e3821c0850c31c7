"""diff-manifests: what upstream lists, what the mirror published, and what S3 really holds.

Three sorted streams merged in one pass, so memory stays bounded however large the mirror is:

    upstream listing (state/, written by the last sync that changed something)
    published manifest (state/, written at the end of the last complete sync)
    the served tree in S3 (ListObjectsV2 under pub/, in key order)

listing vs manifest gives the *lag* (upstream entries not yet published, deletions still pending);
manifest vs S3 gives the *drift* (objects missing, extra, or of the wrong size: someone or something
changed the bucket behind the mirror's back); all three give the *completion*: the share of
upstream entries that clients can fetch as upstream has them.

The streams are compared in S3 key order. A directory's key is ``dir/`` (its marker and index
page), which sorts after siblings such as ``dir-2`` although the manifest lists ``dir`` before
them; :func:`in_key_order` delays directory rows on a small heap to fix that, holding no more than
the directories whose marker key has not been reached yet.
"""

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from mirrorkeeper.layout import RESERVED_DIR
from mirrorkeeper.manifest import Row
from mirrorkeeper.state import RepairList

EXAMPLES = 10
_DIR = "d"
_FILE = "f"
_SYMLINK = "l"
_DONE = "\U0010ffff" * 2  # sorts after every key S3 can hold


@dataclass
class DriftReport:
    """The result of one diff; ``to_json`` is what the workflow passes to publish-health."""

    listing_entries: int = 0
    manifest_entries: int = 0
    objects: int = 0
    missing: int = 0
    extra: int = 0
    size_mismatch: int = 0
    lag: int = 0
    pending_deletes: int = 0
    complete: int = 0
    listing_generated: str = ""
    manifest_generated: str = ""
    sync_in_progress: bool = False
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def drift(self) -> int:
        return self.missing + self.extra + self.size_mismatch

    @property
    def completion_pct(self) -> float:
        if self.listing_entries == 0:
            return 100.0 if self.manifest_entries == 0 and self.listing_generated else 0.0
        return round(100.0 * self.complete / self.listing_entries, 3)

    def note(self, kind: str, path: str) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < EXAMPLES:
            found.append(path)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "drift": self.drift, "completion_pct": self.completion_pct}


def row_key(row: Row) -> str:
    """The key (relative to the served prefix) the sync stores ``row`` under."""
    path: str = row[0]
    return path + "/" if row[1] == _DIR else path


def in_key_order(rows: Iterable[Row]) -> Iterator[tuple[str, Row]]:
    """``(key, row)`` in key order from rows in path order (see the module docstring)."""
    pending: list[tuple[str, int, Row]] = []
    tie = 0
    for row in rows:
        key = row_key(row)
        while pending and pending[0][0] < key:
            found, _, held = heapq.heappop(pending)
            yield found, held
        if row[1] == _DIR:
            tie += 1
            heapq.heappush(pending, (key, tie, row))
        else:
            yield key, row
    while pending:
        found, _, held = heapq.heappop(pending)
        yield found, held


def _same_content(upstream: Row, published: Row) -> bool:
    if upstream[1] != published[1]:
        return False
    if upstream[1] == _FILE:
        return bool(upstream[2] == published[2] and upstream[3] == published[3])
    if upstream[1] == _SYMLINK:
        return bool(upstream[4] == published[4])
    return True


def diff_mirror(
    listing: Iterable[Row] | None,
    manifest: Iterable[Row] | None,
    objects: Iterable[tuple[str, int]],
    report: DriftReport | None = None,
    repair: RepairList | None = None,
    ours: frozenset[str] = frozenset(),
) -> DriftReport:
    """Merge the three streams. ``objects`` are ``(key relative to pub/, size)`` in key order.

    ``None`` for the listing or the manifest means it does not exist yet (no sync has got that far).
    ``repair``, when given, collects what a sync must upload again or delete to undo the drift.
    ``ours``: the sync's own files outside .mirrorkeeper/ (its ftpsync trace): no manifest lists them,
    and they are not drift unless upstream publishes the same path.
    """
    report = report or DriftReport()
    repair = repair if repair is not None else RepairList()
    upstream = in_key_order(listing or ())
    published = in_key_order(manifest or ())
    stored = iter(objects)
    u_key, u_row = next(upstream, (_DONE, None))
    p_key, p_row = next(published, (_DONE, None))
    o_key, o_size = _next_object(stored)
    while u_key is not _DONE or p_key is not _DONE or o_key is not _DONE:
        key = min(u_key, p_key, o_key)
        present = o_key == key
        intact = False
        if present:
            report.objects += 1
        if p_key == key:
            assert p_row is not None
            report.manifest_entries += 1
            intact = present
            if not present:
                report.missing += 1
                report.note("missing", p_row[0])
                repair.add(repair.reupload, p_row[0])
            elif p_row[1] == _FILE and o_size != p_row[2]:
                intact = False
                report.size_mismatch += 1
                report.note("size_mismatch", p_row[0])
                repair.add(repair.reupload, p_row[0])
        elif present and key not in ours:
            report.extra += 1
            report.note("extra", key)
            repair.add(repair.delete, key)
        if u_key == key:
            assert u_row is not None
            report.listing_entries += 1
            if p_row is not None and p_key == key and _same_content(u_row, p_row):
                report.complete += intact
            else:
                report.lag += 1
                report.note("lag", u_row[0])
        elif p_key == key:
            report.pending_deletes += 1
            report.note("pending_delete", key)
        if u_key == key:
            u_key, u_row = next(upstream, (_DONE, None))
        if p_key == key:
            p_key, p_row = next(published, (_DONE, None))
        if present:
            o_key, o_size = _next_object(stored)
    return report


def _next_object(stored: Iterator[tuple[str, int]]) -> tuple[str, int]:
    """The next served object the manifest accounts for: the root page and our own files are not."""
    for key, size in stored:
        if key and not key.startswith(RESERVED_DIR):
            return key, size
    return _DONE, 0
