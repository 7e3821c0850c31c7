"""The planner: diff upstream against the published manifest, and the deletion guard."""

import pytest

from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.errors import DeletionGuardError
from mirrorkeeper.sync.planner import ChangeKind, check_guard, make_plan
from mirrorkeeper.sync.tree import UpstreamTree, resolve_link
from mirrorkeeper.tiers import DEFAULT_LATE_PATTERNS, late_tier

F, D, L = EntryType.FILE, EntryType.DIR, EntryType.SYMLINK


def tree(*entries: Entry, complete: bool = True) -> UpstreamTree:
    ordered = sorted(entries, key=lambda e: e.path)
    by_path = {e.path: e for e in ordered}
    links = {e.path: resolve_link(e.path, by_path) for e in ordered if e.type is L}
    return UpstreamTree(ordered, links, complete=complete, problem="" if complete else "rsync exited 23")


def f(path: str, size: int = 10, mtime: int = 100, sha: str | None = None) -> Entry:
    return Entry(path, F, size, mtime, None, sha)


def d(path: str, mtime: int = 100) -> Entry:
    return Entry(path, D, 0, mtime)


def link(path: str, target: str) -> Entry:
    return Entry(path, L, len(target), 100, target)


def test_first_sync_adds_everything_and_dirties_every_directory() -> None:
    # GIVEN an upstream tree and no manifest
    upstream = tree(d("a"), f("a/x"), d("empty"), f("top"))
    # WHEN planned
    plan = make_plan(upstream, [], DEFAULT_LATE_PATTERNS)
    # THEN every file is uploaded and every directory (root included) gets an index page
    assert [c.new.path for c in plan.data] == ["a/x", "top"]
    assert all(c.kind is ChangeKind.ADD for c in plan.data)
    assert plan.dirty_dirs == {"", "a", "empty"}
    assert plan.deletes == []


def test_no_change_plan_is_empty_and_keeps_recorded_checksums() -> None:
    published = [d("a"), f("a/x", sha="abc"), f("top", sha="def")]
    plan = make_plan(tree(d("a"), f("a/x"), f("top")), published, DEFAULT_LATE_PATTERNS)
    assert plan.is_empty
    assert [e.sha256 for e in plan.target if e is not None] == [None, "abc", "def"]


@pytest.mark.parametrize("changed", [f("x", size=11), f("x", mtime=101)])
def test_size_or_mtime_change_is_one_upload(changed: Entry) -> None:
    plan = make_plan(tree(changed, f("y")), [f("x"), f("y")], DEFAULT_LATE_PATTERNS)
    assert [(c.new.path, c.kind) for c in plan.data] == [("x", ChangeKind.CHANGE)]
    assert plan.dirty_dirs == {""}


def test_deleted_upstream_is_deleted_and_parent_page_rebuilt() -> None:
    plan = make_plan(tree(d("a"), f("a/keep")), [d("a"), f("a/gone", size=5), f("a/keep")], DEFAULT_LATE_PATTERNS)
    assert [e.path for e in plan.deletes] == ["a/gone"]
    assert plan.deleted_files == 1 and plan.deleted_bytes == 5
    assert plan.dirty_dirs == {"a"}


def test_file_becoming_directory_deletes_the_file_key_and_adds_the_directory() -> None:
    plan = make_plan(tree(d("x"), f("x/inner")), [f("x")], DEFAULT_LATE_PATTERNS)
    assert [(e.path, e.type) for e in plan.deletes] == [("x", F)]
    assert [c.new.path for c in plan.data] == ["x/inner"]
    assert {"", "x"} <= plan.dirty_dirs


def test_directory_becoming_file_deletes_marker_and_children() -> None:
    plan = make_plan(tree(f("x")), [d("x"), f("x/inner")], DEFAULT_LATE_PATTERNS)
    assert sorted((e.path, e.type) for e in plan.deletes) == [("x", D), ("x/inner", F)]
    assert [(c.new.path, c.kind) for c in plan.data] == [("x", ChangeKind.RETYPE)]


def test_file_becoming_symlink_replaces_in_place_without_a_delete() -> None:
    plan = make_plan(tree(link("x", "y"), f("y")), [f("x"), f("y")], DEFAULT_LATE_PATTERNS)
    assert plan.deletes == []
    assert [e.path for e in plan.link_entries()] == ["x"]


def test_symlink_republished_when_its_target_changes() -> None:
    published = [link("cur", "v2"), d("v2"), f("v2/iso", size=1), link("latest.iso", "v2/iso")]
    upstream = tree(link("cur", "v2"), d("v2"), f("v2/iso", size=2), link("latest.iso", "cur/iso"))
    plan = make_plan(upstream, published, DEFAULT_LATE_PATTERNS)
    assert [e.path for e in plan.link_entries()] == ["latest.iso"]


def test_unchanged_symlink_to_unchanged_target_is_left_alone() -> None:
    published = [f("a"), link("b", "a")]
    plan = make_plan(tree(f("a"), link("b", "a")), published, DEFAULT_LATE_PATTERNS)
    assert plan.is_empty


def test_index_files_go_to_late_tiers_after_data() -> None:
    upstream = tree(
        d("repodata"),
        f("repodata/repomd.xml"),
        f("repodata/primary.xml.gz"),
        d("dists"),
        f("dists/Release"),
        f("dists/Packages.gz"),
        f("SHA256SUMS"),
        f("pkg.rpm"),
    )
    plan = make_plan(upstream, [], DEFAULT_LATE_PATTERNS)
    assert [c.new.path for c in plan.data] == ["pkg.rpm", "repodata/primary.xml.gz"]
    assert [[c.new.path for c in tier] for tier in plan.late_tiers] == [
        ["dists/Packages.gz"],
        ["SHA256SUMS", "dists/Release", "repodata/repomd.xml"],
    ]


def test_late_patterns_match_names_not_paths() -> None:
    assert late_tier("InRelease", DEFAULT_LATE_PATTERNS) == 1
    assert late_tier("Packages.xz", DEFAULT_LATE_PATTERNS) == 0
    assert late_tier("Release-notes.txt", DEFAULT_LATE_PATTERNS) is None
    assert late_tier("x", (("x",),)) == 0


def test_directory_mtime_change_rebuilds_parent_page_only() -> None:
    plan = make_plan(tree(d("a", mtime=200), f("a/x")), [d("a"), f("a/x")], DEFAULT_LATE_PATTERNS)
    assert plan.dirty_dirs == {""}
    assert plan.data == [] and plan.deletes == []


def published_mirror(files: int) -> list[Entry]:
    return [f(f"f{i:03d}", size=100) for i in range(files)]


def test_guard_refuses_deleting_more_than_the_share_of_files() -> None:
    plan = make_plan(tree(*published_mirror(100)[:85]), published_mirror(100), DEFAULT_LATE_PATTERNS)
    with pytest.raises(DeletionGuardError, match=r"deletes 15 of 100 files \(15.0%\)"):
        check_guard(plan, tree(*published_mirror(85)), 10, force=False)
    assert check_guard(plan, tree(*published_mirror(85)), 20, force=False) == []


def test_guard_counts_bytes_too() -> None:
    published = [f("big", size=10_000), *published_mirror(20)]
    upstream = tree(*published_mirror(20))
    plan = make_plan(upstream, published, DEFAULT_LATE_PATTERNS)
    with pytest.raises(DeletionGuardError, match="bytes"):
        check_guard(plan, upstream, 10, force=False)


def test_guard_refuses_empty_listing_even_below_share_and_force_overrides() -> None:
    plan = make_plan(tree(), published_mirror(3), DEFAULT_LATE_PATTERNS)
    with pytest.raises(DeletionGuardError, match="listing is empty"):
        check_guard(plan, tree(), 100, force=False)
    assert check_guard(plan, tree(), 100, force=True)


def test_guard_refuses_incomplete_listing() -> None:
    upstream = tree(*published_mirror(10), complete=False)
    plan = make_plan(upstream, published_mirror(10), DEFAULT_LATE_PATTERNS)
    with pytest.raises(DeletionGuardError, match="incomplete"):
        check_guard(plan, upstream, 10, force=False)


def test_first_sync_is_never_guarded() -> None:
    upstream = tree(*published_mirror(10))
    assert check_guard(make_plan(upstream, [], DEFAULT_LATE_PATTERNS), upstream, 0, force=False) == []


def test_a_changed_link_target_republishes_the_link_and_a_tree_without_links_has_none() -> None:
    published = [f("a", sha="x"), link("l", "a"), f("z", sha="y")]
    with_link = make_plan(tree(f("a", size=11), link("l", "a"), f("z")), published, DEFAULT_LATE_PATTERNS)
    assert [e.path for e in with_link.link_entries()] == ["l"]
    without = make_plan(tree(f("a", size=11), f("z")), [f("a"), f("z")], DEFAULT_LATE_PATTERNS)
    assert without.links == [] and [c.new.path for c in without.data] == ["a"]
