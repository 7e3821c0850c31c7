"""Diff the upstream tree against the published manifest, and decide what a run will do.

A merge of two sorted streams: the upstream tree (in memory, already sorted) and the manifest
(streamed). The plan's ``target`` is the manifest this run publishes if every change lands:
unchanged entries keep their recorded SHA-256, changed ones get theirs when uploaded.

The deletion guard (:func:`check_guard`) never stops the run: deletions it objects to are *held*
(still published, still in the manifest, deleted by a later run that passes the guard or is
forced), and everything else in the plan is published.
"""

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from mirrorkeeper.entries import Entry, EntryType, ancestors
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

    @property
    def overwrites(self) -> bool:
        """Its upload replaces an object a cache may hold (a new key, even a type change's, was never served)."""
        return self.old is not None and _same_key(self.old, self.new)


@dataclass
class Plan:
    # None marks an entry dropped during the run (vanished upstream, unpublishable link).
    target: list[Entry | None]
    data: list[Change] = field(default_factory=list)
    late_tiers: list[list[Change]] = field(default_factory=list)
    links: list[int] = field(default_factory=list)  # indexes into target of symlinks to (re)publish
    dirty_dirs: set[str] = field(default_factory=set)
    deletes: list[Entry] = field(default_factory=list)  # gone upstream: the guard decides when
    # Objects a type change (file <-> directory) leaves behind under the other key: part of a change.
    replaced: list[Entry] = field(default_factory=list)
    held: list[Entry] = field(default_factory=list)  # deletions kept back: still published
    # Directories and symlinks whose object this run creates rather than replaces ('' for the root of
    # a first sync): no cache holds them. (A file's Change says so itself.)
    new_objects: set[str] = field(default_factory=set)
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
        return not (self.data or any(self.late_tiers) or self.links or self.dirty_dirs or self.deletes or self.replaced)

    def hold(self, keep: Callable[[Entry], bool]) -> list[Entry]:
        """Move the deletions ``keep`` picks to ``held``; returns the ones newly held."""
        moved = [e for e in self.deletes if keep(e)]
        if moved:
            self.deletes = [e for e in self.deletes if not keep(e)]
            self.held = sorted([*self.held, *moved], key=lambda e: e.path)
        return moved

    def published(self) -> Iterator[Entry]:
        """What the mirror holds once this plan is published: the target and the held deletions, in order."""
        return heapq.merge((e for e in self.target if e is not None), self.held, key=lambda e: e.path)

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
            "held_deletions": len(self.held),
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
        if new.type is not EntryType.FILE and (previous is None or not _same_key(previous, new)):
            plan.new_objects.add(new.path)
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
            plan.replaced.append(previous)

    def gone(old: Entry) -> None:
        _count_old(plan, old)
        if _unreadable(old.path, tree.unreadable):
            plan.target.append(old)  # upstream would not show it this run: unknown, not gone
        else:
            plan.deletes.append(old)

    if old is None:
        plan.new_objects.add("")
    for new in tree.entries:
        while old is not None and old.path < new.path:
            gone(old)
            old = next(old_iter, None)
        if old is not None and old.path == new.path:
            _count_old(plan, old)
            record(new, old)
            old = next(old_iter, None)
        else:
            record(new, None)
    while old is not None:
        gone(old)
        old = next(old_iter, None)

    for deleted in [*plan.deletes, *plan.replaced]:
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


def _same_key(old: Entry, new: Entry) -> bool:
    """A directory's object is its marker ("x/"); a file's and a symlink's is "x"."""
    return (old.type is EntryType.DIR) == (new.type is EntryType.DIR)


def _count_old(plan: Plan, old: Entry) -> None:
    if old.type is not EntryType.DIR:
        plan.old_files += 1
    if old.type is EntryType.FILE:
        plan.old_bytes += old.size


def _unreadable(path: str, unreadable: dict[str, str]) -> bool:
    return bool(unreadable) and (path in unreadable or any(parent in unreadable for parent in ancestors(path)))


@dataclass(frozen=True)
class GuardLimits:
    """When the deletion guard holds a plan's deletions (docs/sync.md, "Deletion guard")."""

    max_delete_percent: float  # of the mirror's files or of its bytes
    max_delete: int | None  # files, whatever the share; None: no absolute limit
    min_delete_guard: int  # files: at or below this many, the share never trips


def check_guard(plan: Plan, tree: UpstreamTree, limits: GuardLimits) -> list[str]:
    """Why the plan's deletions should be held ([] when they may go). A first sync (nothing
    published) deletes nothing, so it is never guarded, whatever the listing's errors."""
    if not plan.old_files or not plan.deletes:
        return []
    reasons = []
    if not tree.complete:
        reasons.append(f"the upstream listing is incomplete ({tree.problem or 'rsync reported errors'})")
    elif not tree.entries:
        reasons.append("the upstream listing is empty but the mirror holds files")
    files, size = plan.deleted_files, plan.deleted_bytes
    if limits.max_delete is not None and files > limits.max_delete:
        reasons.append(f"the plan deletes {files} files, above --max-delete {limits.max_delete}")
    if files > limits.min_delete_guard:
        file_pct = 100.0 * files / plan.old_files
        byte_pct = 100.0 * size / plan.old_bytes if plan.old_bytes else 0.0
        if file_pct > limits.max_delete_percent or byte_pct > limits.max_delete_percent:
            reasons.append(
                f"the plan deletes {files} of {plan.old_files} files ({file_pct:.1f}%) and "
                f"{size} of {plan.old_bytes} bytes ({byte_pct:.1f}%), above the "
                f"{limits.max_delete_percent:g}% limit"
            )
    return reasons
