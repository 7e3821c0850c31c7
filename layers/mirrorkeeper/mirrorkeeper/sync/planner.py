"""Diff the upstream tree against the published manifest, and decide what a run will do.

A merge of two sorted streams: the upstream tree (in memory, already sorted) and the manifest
(streamed). The plan's ``target`` is the manifest this run publishes if every change lands:
unchanged entries keep their recorded SHA-256, changed ones get theirs when uploaded.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.errors import DeletionGuardError
from mirrorkeeper.sync.tree import UpstreamTree
from mirrorkeeper.tiers import LateTiers, late_tier


class ChangeKind(StrEnum):
    ADD = "add"
    CHANGE = "change"
    RETYPE = "retype"


@dataclass(frozen=True, slots=True)
class Change:
    index: int  # position in Plan.target
    new: Entry
    old: Entry | None
    kind: ChangeKind


@dataclass
class Plan:
    # None marks an entry dropped during the run (vanished upstream, unpublishable link).
    target: list[Entry | None]
    data: list[Change] = field(default_factory=list)
    late_tiers: list[list[Change]] = field(default_factory=list)
    links: list[int] = field(default_factory=list)  # indexes into target of symlinks to (re)publish
    dirty_dirs: set[str] = field(default_factory=set)
    deletes: list[Entry] = field(default_factory=list)
    old_files: int = 0
    old_bytes: int = 0

    def link_entries(self) -> list[Entry]:
        return [e for e in (self.target[i] for i in self.links) if e is not None]

    @property
    def uploads(self) -> Iterator[Change]:
        yield from self.data
        for tier in self.late_tiers:
            yield from tier

    @property
    def upload_bytes(self) -> int:
        return sum(c.new.size for c in self.uploads)

    @property
    def deleted_files(self) -> int:
        return sum(1 for e in self.deletes if e.type is not EntryType.DIR)

    @property
    def deleted_bytes(self) -> int:
        return sum(e.size for e in self.deletes if e.type is EntryType.FILE)

    @property
    def is_empty(self) -> bool:
        return not (self.data or any(self.late_tiers) or self.links or self.dirty_dirs or self.deletes)

    def counts(self) -> dict[str, int]:
        uploads = list(self.uploads)
        return {
            "upload_files": len(uploads),
            "upload_bytes": sum(c.new.size for c in uploads),
            "late_files": sum(len(t) for t in self.late_tiers),
            "links": len(self.links),
            "index_pages": len(self.dirty_dirs),
            "delete_files": self.deleted_files,
            "delete_dirs": len(self.deletes) - self.deleted_files,
            "delete_bytes": self.deleted_bytes,
        }


def make_plan(tree: UpstreamTree, published: Iterable[Entry], late_patterns: LateTiers) -> Plan:
    plan = Plan(target=[], late_tiers=[[] for _ in late_patterns])
    # Only symlinks need to know which paths changed (a link is republished when its target
    # changes): without any, skip a set as big as the change list.
    changed_paths: set[str] | None = set() if tree.links else None
    old_iter = iter(published)
    old = next(old_iter, None)

    def record(new: Entry, previous: Entry | None) -> None:
        index = len(plan.target)
        if previous is not None and previous.same_content(new):
            # Unchanged for clients; keep the recorded checksum, take new dir mtimes.
            plan.target.append(previous if new.type is not EntryType.DIR else new)
            if new.type is EntryType.DIR and new.mtime != previous.mtime:
                plan.dirty_dirs.add(new.parent)
            return
        kind = (
            ChangeKind.ADD
            if previous is None
            else (ChangeKind.CHANGE if previous.type is new.type else ChangeKind.RETYPE)
        )
        plan.target.append(new)
        if changed_paths is not None:
            changed_paths.add(new.path)
        plan.dirty_dirs.add(new.parent)
        if new.type is EntryType.DIR:
            plan.dirty_dirs.add(new.path)
        elif new.type is EntryType.FILE:
            tier = late_tier(new.name, late_patterns)
            change = Change(index, new, previous, kind)
            (plan.data if tier is None else plan.late_tiers[tier]).append(change)
        if previous is not None and kind is ChangeKind.RETYPE and EntryType.DIR in (previous.type, new.type):
            # A directory's marker key ("x/") differs from a file's ("x"): the old one must go.
            # File and symlink share a key, so the upload itself replaces the old object.
            plan.deletes.append(previous)

    for new in tree.entries:
        while old is not None and old.path < new.path:
            _count_old(plan, old)
            plan.deletes.append(old)
            old = next(old_iter, None)
        if old is not None and old.path == new.path:
            _count_old(plan, old)
            record(new, old)
            old = next(old_iter, None)
        else:
            record(new, None)
    while old is not None:
        _count_old(plan, old)
        plan.deletes.append(old)
        old = next(old_iter, None)

    for deleted in plan.deletes:
        plan.dirty_dirs.add(deleted.parent)
    live_dirs = {e.path for e in plan.target if e is not None and e.type is EntryType.DIR} | {""}
    plan.dirty_dirs &= live_dirs
    if changed_paths is not None:
        plan.links = [
            index
            for index, entry in enumerate(plan.target)
            if entry is not None
            and entry.type is EntryType.SYMLINK
            and (entry.path in changed_paths or not tree.links[entry.path].via.isdisjoint(changed_paths))
        ]
    return plan


def _count_old(plan: Plan, old: Entry) -> None:
    if old.type is not EntryType.DIR:
        plan.old_files += 1
    if old.type is EntryType.FILE:
        plan.old_bytes += old.size


def check_guard(plan: Plan, tree: UpstreamTree, max_delete_percent: float, force: bool) -> list[str]:
    """Reasons the deletion guard refuses the plan ([] when it passes). Raises unless ``force``."""
    reasons = []
    if not tree.complete:
        reasons.append(f"the upstream listing is incomplete ({tree.problem or 'rsync reported errors'})")
    elif not tree.entries and plan.old_files:
        reasons.append("the upstream listing is empty but the mirror holds files")
    if plan.old_files and plan.deletes:
        file_pct = 100.0 * plan.deleted_files / plan.old_files
        byte_pct = 100.0 * plan.deleted_bytes / plan.old_bytes if plan.old_bytes else 0.0
        if file_pct > max_delete_percent or byte_pct > max_delete_percent:
            reasons.append(
                f"the plan deletes {plan.deleted_files} of {plan.old_files} files ({file_pct:.1f}%) and "
                f"{plan.deleted_bytes} of {plan.old_bytes} bytes ({byte_pct:.1f}%), above the "
                f"{max_delete_percent:g}% limit"
            )
    if reasons and not force:
        raise DeletionGuardError(
            "deletion guard refused the sync: "
            + "; ".join(reasons)
            + ". Nothing was changed. If upstream really shrank, rerun with --force-delete "
            "(or raise --max-delete-percent)."
        )
    return reasons
