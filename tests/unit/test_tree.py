"""Building the mirrored tree from a listing: names checked, symlinks resolved or skipped."""

import pytest

from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.sync.rsync import Listing, RawEntry
from mirrorkeeper.sync.tree import LinkKind, UnresolvableLinkError, build_tree, resolve_link

F, D, L = EntryType.FILE, EntryType.DIR, EntryType.SYMLINK
LAYOUT = MirrorLayout.create("bucket-name", "")
RESERVED = (".mirrorkeeper/", ".mirrorkeeper/trace")


def by_path(*entries: Entry) -> dict[str, Entry]:
    return {e.path: e for e in entries}


def test_link_to_file_and_link_through_directory_link() -> None:
    tree = by_path(
        Entry("v1", D, 0, 0),
        Entry("v1/a.iso", F, 1, 0),
        Entry("cur", L, 2, 0, "v1"),
        Entry("latest.iso", L, 9, 0, "cur/a.iso"),
    )
    assert resolve_link("cur", tree).kind is LinkKind.DIR
    resolved = resolve_link("latest.iso", tree)
    assert (resolved.final_path, resolved.kind) == ("v1/a.iso", LinkKind.FILE)
    assert {"cur", "latest.iso", "v1/a.iso"} <= resolved.via


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("../outside", "leaves"),
        ("sub/../../x", "leaves"),
        ("missing", "does not exist"),
        ("loop", "loop"),
    ],
)
def test_unsafe_or_broken_links_are_refused(target: str, reason: str) -> None:
    tree = by_path(Entry("link", L, len(target), 0, target), Entry("loop", L, 4, 0, "link"), Entry("sub", D, 0, 0))
    with pytest.raises(UnresolvableLinkError, match=reason):
        resolve_link("link", tree)


def test_link_to_root_is_a_directory_link() -> None:
    assert resolve_link("sub/up", by_path(Entry("sub", D, 0, 0), Entry("sub/up", L, 2, 0, ".."))).final_path == ""


def test_build_tree_sorts_checks_names_and_reports_skips() -> None:
    listing = Listing(
        entries=[
            RawEntry(b"z", F, 1, 0),
            RawEntry(b"bad\xff", D, 0, 0),
            RawEntry(b"bad\xff/child", F, 1, 0),
            RawEntry(b".mirrorkeeper/trace", F, 1, 0),
            RawEntry(b"a", F, 1, 0),
            RawEntry(b"esc", L, 6, 0, b"../etc"),
            RawEntry(b"ok", L, 1, 0, b"a"),
        ],
        skipped=[(b"fifo", "not a regular file")],
    )
    tree = build_tree(listing, LAYOUT, RESERVED)
    assert [e.path for e in tree.entries] == ["a", "ok", "z"]
    reasons = {s.path: s.reason for s in tree.skipped}
    assert set(reasons) == {"bad\\xff", "bad\\xff/child", ".mirrorkeeper/trace", "esc", "fifo"}
    assert "UTF-8" in reasons["bad\\xff"]
    assert "reserved" in reasons[".mirrorkeeper/trace"]
    assert "unsafe" in reasons["esc"]
    assert tree.links["ok"].final_path == "a"


def test_names_too_long_for_an_s3_key_are_refused() -> None:
    long_name = ("n" * 250 + "/") * 5 + "file"
    tree = build_tree(Listing(entries=[RawEntry(long_name.encode(), F, 1, 0)]), LAYOUT, RESERVED)
    assert tree.entries == [] and "1024-byte" in tree.skipped[0].reason


def test_build_tree_consumes_the_raw_listing_and_keeps_a_clean_tree_whole() -> None:
    # GIVEN a listing with nothing to refuse and no symlinks (the common case, taken without filters)
    listing = Listing(entries=[RawEntry(b"d/b", F, 2, 5), RawEntry(b"d", D, 0, 4), RawEntry(b"a", F, 1, 3)])
    # WHEN the tree is built
    tree = build_tree(listing, LAYOUT, RESERVED)
    # THEN every entry is kept, sorted, and the raw entries are gone (their memory with them)
    assert [(e.path, e.size, e.mtime) for e in tree.entries] == [("a", 1, 3), ("d", 0, 4), ("d/b", 2, 5)]
    assert tree.links == {} and tree.skipped == []
    assert listing.entries == []
