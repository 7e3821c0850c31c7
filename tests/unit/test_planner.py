"""The planner: diff upstream against the published manifest, and the deletion guard."""

import pytest

from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.sync.planner import ChangeKind, GuardLimits, check_guard, make_plan
from mirrorkeeper.sync.tree import UpstreamTree, resolve_link
from mirrorkeeper.tiers import DEFAULT_LATE_PATTERNS, late_tier

F, D, L = EntryType.FILE, EntryType.DIR, EntryType.SYMLINK


def tree(*entries: Entry, complete: bool = True, unreadable: dict[str, str] | None = None) -> UpstreamTree:
    ordered = sorted(entries, key=lambda e: e.path)
    by_path = {e.path: e for e in ordered}
    links = {e.path: resolve_link(e.path, by_path) for e in ordered if e.type is L}
    problem = "" if complete else "rsync exited 23"
    return UpstreamTree(ordered, links, complete=complete, problem=problem, unreadable=unreadable or {})


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
    # THEN the old file's key goes as part of the change, not as a deletion the guard weighs
    assert [(e.path, e.type) for e in plan.replaced] == [("x", F)] and plan.deletes == []
    assert [c.new.path for c in plan.data] == ["x/inner"]
    assert {"", "x"} <= plan.dirty_dirs


def test_directory_becoming_file_deletes_marker_and_children() -> None:
    plan = make_plan(tree(f("x")), [d("x"), f("x/inner")], DEFAULT_LATE_PATTERNS)
    assert [(e.path, e.type) for e in plan.replaced] == [("x", D)]
    assert [(e.path, e.type) for e in plan.deletes] == [("x/inner", F)]
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


def limits(percent: float = 10, max_delete: int | None = None, floor: int = 0) -> GuardLimits:
    return GuardLimits(max_delete_percent=percent, max_delete=max_delete, min_delete_guard=floor)


def test_guard_objects_to_deleting_more_than_the_share_of_files() -> None:
    plan = make_plan(tree(*published_mirror(100)[:85]), published_mirror(100), DEFAULT_LATE_PATTERNS)
    (reason,) = check_guard(plan, tree(*published_mirror(85)), limits(10))
    assert "deletes 15 of 100 files (15.0%)" in reason
    assert check_guard(plan, tree(*published_mirror(85)), limits(20)) == []


def test_below_the_floor_the_share_never_trips() -> None:
    # GIVEN a small repository whose routine churn deletes 15 of its 100 files (15 %)
    plan = make_plan(tree(*published_mirror(100)[:85]), published_mirror(100), DEFAULT_LATE_PATTERNS)
    upstream = tree(*published_mirror(85))
    # THEN a floor of 100 files lets it through, a floor of 14 does not
    assert check_guard(plan, upstream, limits(10, floor=100)) == []
    assert check_guard(plan, upstream, limits(10, floor=15)) == []
    assert check_guard(plan, upstream, limits(10, floor=14))


def test_max_delete_trips_above_its_count_whatever_the_share() -> None:
    plan = make_plan(tree(*published_mirror(100)[:85]), published_mirror(100), DEFAULT_LATE_PATTERNS)
    upstream = tree(*published_mirror(85))
    (reason,) = check_guard(plan, upstream, limits(100, max_delete=14, floor=1000))
    assert "above --max-delete 14" in reason
    assert check_guard(plan, upstream, limits(100, max_delete=15, floor=1000)) == []


def test_guard_counts_bytes_too() -> None:
    published = [f("big", size=10_000), *published_mirror(20)]
    upstream = tree(*published_mirror(20))
    plan = make_plan(upstream, published, DEFAULT_LATE_PATTERNS)
    assert any("bytes" in reason for reason in check_guard(plan, upstream, limits(10)))


def test_guard_objects_to_an_empty_listing_whatever_the_limits() -> None:
    plan = make_plan(tree(), published_mirror(3), DEFAULT_LATE_PATTERNS)
    assert any("listing is empty" in r for r in check_guard(plan, tree(), limits(100, floor=1000)))


def test_guard_objects_to_deleting_after_an_incomplete_listing() -> None:
    upstream = tree(*published_mirror(9), complete=False)
    plan = make_plan(upstream, published_mirror(10), DEFAULT_LATE_PATTERNS)
    assert any("incomplete" in r for r in check_guard(plan, upstream, limits(100, floor=1000)))


def test_first_sync_is_never_guarded_whatever_the_listing() -> None:
    upstream = tree(*published_mirror(10), complete=False)
    assert check_guard(make_plan(upstream, [], DEFAULT_LATE_PATTERNS), upstream, limits(0)) == []


def test_held_deletions_stay_published_in_order() -> None:
    # GIVEN a plan that deletes two files and adds one
    plan = make_plan(tree(f("a"), f("c")), [f("a"), f("b"), f("d")], DEFAULT_LATE_PATTERNS)
    # WHEN its deletions are held
    held = plan.hold(lambda _: True)
    # THEN nothing is deleted and the published tree keeps them, in path order
    assert [e.path for e in held] == ["b", "d"] and plan.deletes == []
    assert [e.path for e in plan.published()] == ["a", "b", "c", "d"]


def test_contents_of_a_directory_upstream_would_not_list_are_kept() -> None:
    # GIVEN a published directory whose listing upstream refused this run
    published = [d("locked"), f("locked/a"), f("locked/b"), f("open")]
    upstream = tree(d("locked"), unreadable={"locked": "Permission denied"})
    # THEN its contents are kept as published, not deleted; what vanished elsewhere is deleted
    plan = make_plan(upstream, published, DEFAULT_LATE_PATTERNS)
    assert [e.path for e in plan.deletes] == ["open"]
    assert [e.path for e in plan.published()] == ["locked", "locked/a", "locked/b"]


def test_a_changed_link_target_republishes_the_link_and_a_tree_without_links_has_none() -> None:
    published = [f("a", sha="x"), link("l", "a"), f("z", sha="y")]
    with_link = make_plan(tree(f("a", size=11), link("l", "a"), f("z")), published, DEFAULT_LATE_PATTERNS)
    assert [e.path for e in with_link.link_entries()] == ["l"]
    without = make_plan(tree(f("a", size=11), f("z")), [f("a"), f("z")], DEFAULT_LATE_PATTERNS)
    assert without.links == [] and [c.new.path for c in without.data] == ["a"]


def test_the_plan_tells_replaced_objects_from_new_ones() -> None:
    # GIVEN a published file, directory and links, and a file that becomes a directory
    published = [f("a"), d("dir"), link("k", "a"), link("l", "a"), f("s"), f("x")]
    # WHEN upstream changes the file, adds a directory and a link, retargets a link, retypes k and x
    upstream = tree(
        f("a", size=11), d("dir"), d("dir/new"), f("k"), link("l", "s"), link("m", "a"), f("s"), d("x"), f("x/in")
    )
    plan = make_plan(upstream, published, DEFAULT_LATE_PATTERNS)
    # THEN only what replaces an object a cache may hold counts as replacing one (a link and a file
    # share a key, a directory's is its marker)
    assert {c.new.path: c.overwrites for c in plan.data} == {"a": True, "k": True, "x/in": False}
    assert plan.new_objects == {"dir/new", "m", "x"}
    # AND on a first sync even the root's page is new
    assert "" in make_plan(upstream, [], DEFAULT_LATE_PATTERNS).new_objects
    assert "" not in plan.new_objects
