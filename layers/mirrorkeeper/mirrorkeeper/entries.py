"""The tree model shared by the listing, the manifest and the planner."""

import posixpath
from dataclasses import dataclass
from enum import StrEnum


class EntryType(StrEnum):
    FILE = "f"
    DIR = "d"
    SYMLINK = "l"


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of the mirror. ``path`` is relative to the mirror root, '/'-separated, never ''."""

    path: str
    type: EntryType
    size: int
    mtime: int
    target: str | None = None
    sha256: str | None = None

    @property
    def parent(self) -> str:
        return posixpath.dirname(self.path)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def same_content(self, other: "Entry") -> bool:
        """True when publishing ``other`` over ``self`` would change nothing a client sees."""
        if self.type is not other.type:
            return False
        if self.type is EntryType.FILE:
            return self.size == other.size and self.mtime == other.mtime
        if self.type is EntryType.SYMLINK:
            return self.target == other.target
        return True


def ancestors(path: str) -> list[str]:
    """'a/b/c' → ['a/b', 'a', ''] (the root is '')."""
    out = []
    while path:
        path = posixpath.dirname(path)
        out.append(path)
    return out
