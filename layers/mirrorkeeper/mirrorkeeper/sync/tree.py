"""From a raw rsync listing to the tree we will mirror: names checked, symlinks resolved.

Symlinks are handled on purpose (docs/architecture.md, docs/sync.md): one that resolves inside the tree is published
(a file link as a server-side copy of its target, a directory link as a redirect); one that is
absolute, leaves the tree, dangles or loops is skipped and reported, like rsync's --safe-links.
"""

import posixpath
from dataclasses import dataclass, field
from enum import StrEnum

from mirrorkeeper.entries import Entry, EntryType, ancestors
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.names import refusal_reason
from mirrorkeeper.sync.rsync import Listing

MAX_SYMLINK_HOPS = 40


class LinkKind(StrEnum):
    FILE = "file"
    DIR = "dir"


@dataclass(frozen=True, slots=True)
class ResolvedLink:
    final_path: str
    kind: LinkKind
    via: frozenset[str]


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    reason: str


@dataclass
class UpstreamTree:
    entries: list[Entry]
    links: dict[str, ResolvedLink] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    complete: bool = True
    problem: str = ""
    # Paths upstream would not let us read this run ({path: reason}): what is published at or under
    # them stays as it is.
    unreadable: dict[str, str] = field(default_factory=dict)


def build_tree(listing: Listing, layout: MirrorLayout, reserved: tuple[str, ...]) -> UpstreamTree:
    """The tree to mirror, sorted by path. Consumes ``listing.entries`` (it is empty afterwards)."""
    skipped = [Skipped(_show(name), reason) for name, reason in listing.skipped]
    accepted: list[Entry] = []
    raw_entries = listing.entries
    # Taken from the end so each raw entry is freed as its Entry is made: for a big tree the two
    # lists side by side would be the run's peak memory.
    while raw_entries:
        raw = raw_entries.pop()
        reason = refusal_reason(raw.path, layout, reserved)
        if reason is None and raw.target is not None:
            try:
                target = raw.target.decode("utf-8")
            except UnicodeDecodeError:
                reason = "symlink target is not valid UTF-8"
        if reason:
            skipped.append(Skipped(_show(raw.path), reason))
            continue
        accepted.append(
            Entry(raw.path.decode(), raw.type, raw.size, raw.mtime, target if raw.target is not None else None)
        )
    accepted.sort(key=lambda e: e.path)
    entries = accepted
    if skipped:
        # A refused directory takes its contents with it: they would be orphans in S3.
        refused_dirs = {s.path for s in skipped}
        entries = [e for e in accepted if not any(a in refused_dirs for a in ancestors(e.path))]
    links: dict[str, ResolvedLink] = {}
    if any(e.type is EntryType.SYMLINK for e in entries):
        by_path = {e.path: e for e in accepted}
        kept: list[Entry] = []
        for entry in entries:
            if entry.type is EntryType.SYMLINK:
                try:
                    links[entry.path] = resolve_link(entry.path, by_path)
                except UnresolvableLinkError as exc:
                    skipped.append(Skipped(entry.path, str(exc)))
                    continue
            kept.append(entry)
        entries = kept
    skipped.sort(key=lambda s: s.path)
    return UpstreamTree(entries, links, skipped, listing.complete, listing.problem, listing.unreadable)


class UnresolvableLinkError(Exception):
    pass


def resolve_link(path: str, by_path: dict[str, Entry]) -> ResolvedLink:
    """Follow the symlink at ``path`` (and links along the way) to a file or directory inside the tree."""
    via: set[str] = set()
    final = _resolve(path, by_path, via, [MAX_SYMLINK_HOPS])
    entry = by_path.get(final)
    kind = LinkKind.DIR if final == "" or (entry and entry.type is EntryType.DIR) else LinkKind.FILE
    return ResolvedLink(final, kind, frozenset(via))


def _resolve(path: str, by_path: dict[str, Entry], via: set[str], hops: list[int]) -> str:
    current = ""
    parts = path.split("/") if path else []
    for index, part in enumerate(parts):
        candidate = f"{current}/{part}" if current else part
        entry = by_path.get(candidate)
        if entry is None:
            raise UnresolvableLinkError(f"symlink points at {candidate!r}, which does not exist upstream")
        while entry is not None and entry.type is EntryType.SYMLINK:
            hops[0] -= 1
            if hops[0] < 0:
                raise UnresolvableLinkError("symlink loop (more than 40 links followed)")
            via.add(candidate)
            target = entry.target or ""
            if target.startswith("/"):
                raise UnresolvableLinkError(f"symlink target {target!r} is absolute (unsafe link)")
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(candidate), target))
            if joined == ".." or joined.startswith("../"):
                raise UnresolvableLinkError(f"symlink target {target!r} leaves the mirrored tree (unsafe link)")
            candidate = _resolve("" if joined == "." else joined, by_path, via, hops)
            entry = by_path.get(candidate)
        if index < len(parts) - 1 and entry is not None and entry.type is not EntryType.DIR:
            raise UnresolvableLinkError(f"symlink path goes through {candidate!r}, which is not a directory")
        current = candidate
    via.add(current)
    return current


def _show(raw: bytes) -> str:
    """A printable, unambiguous rendering of a raw name for reports."""
    return raw.decode("utf-8", errors="backslashreplace")
