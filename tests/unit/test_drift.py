"""diff-manifests' streaming merge, on rows built here (no network)."""

import random

import pytest

from mirrorkeeper.manifest import Row
from mirrorkeeper.state import RepairList
from mirrorkeeper.verify.drift import diff_mirror, in_key_order, row_key


def f(path: str, size: int = 10, mtime: int = 1000, sha: str | None = None) -> Row:
    return [path, "f", size, mtime, None, sha]


def d(path: str) -> Row:
    return [path, "d", 0, 1000, None, None]


def link(path: str, target: str) -> Row:
    return [path, "l", len(target), 1000, target, None]


def objects_of(rows: list[Row]) -> list[tuple[str, int]]:
    """What a complete sync leaves in S3 for ``rows``: sorted keys, file sizes."""
    return sorted((row_key(r), r[2] if r[1] == "f" else 7) for r in rows)


def random_tree(rng: random.Random, size: int) -> list[Row]:
    alphabet = ["a", "a-b", "a.b", "a0", "b", "-", ".", "0", "z", "é", "a b"]
    paths: dict[str, str] = {}
    for _ in range(size):
        depth = rng.randint(1, 4)
        parts = [rng.choice(alphabet) for _ in range(depth)]
        for i in range(1, depth):
            prefix = "/".join(parts[:i])
            if paths.get(prefix, "d") != "d":
                break
            paths[prefix] = "d"
        else:
            path = "/".join(parts)
            paths.setdefault(path, rng.choice("fdl"))
    return [
        f(p) if t == "f" else d(p) if t == "d" else link(p, "x")
        for p, t in sorted(paths.items())
        if all(paths.get("/".join(p.split("/")[:i])) == "d" for i in range(1, p.count("/") + 1))
    ]


@pytest.mark.parametrize("seed", range(30))
def test_in_key_order_matches_a_full_sort(seed: int) -> None:
    # GIVEN rows in manifest (path) order, with names that sort between 'dir' and 'dir/'
    rows = random_tree(random.Random(seed), 60)
    # WHEN they are reordered by the streaming heap
    keys = [key for key, _ in in_key_order(rows)]
    # THEN the order is exactly S3's key order
    assert keys == sorted(row_key(r) for r in rows)


def test_in_sync_mirror_is_complete_without_drift() -> None:
    rows = [d("a"), f("a-b"), f("a/x"), link("cur", "a"), f("z", 3)]  # manifest (path) order
    report = diff_mirror(rows, rows, objects_of(rows))
    assert (report.missing, report.extra, report.size_mismatch, report.lag, report.pending_deletes) == (0, 0, 0, 0, 0)
    assert report.listing_entries == report.manifest_entries == report.objects == 5
    assert report.completion_pct == 100.0


def test_object_deleted_behind_the_mirrors_back_is_missing() -> None:
    rows = [d("a"), f("a/x"), f("a/y")]
    stored = [o for o in objects_of(rows) if o[0] != "a/x"]
    report = diff_mirror(rows, rows, stored)
    assert report.missing == 1 and report.examples["missing"] == ["a/x"]
    assert report.drift == 1
    assert report.completion_pct == pytest.approx(66.667)


def test_extra_and_wrong_size_objects_are_drift_but_our_own_files_are_not() -> None:
    rows = [f("a", 10), f("b", 10)]
    stored = [("", 100), (".mirrorkeeper/trace", 50), ("a", 10), ("b", 11), ("stray", 1)]
    report = diff_mirror(rows, rows, stored)
    assert (report.missing, report.extra, report.size_mismatch) == (0, 1, 1)
    assert report.examples == {"size_mismatch": ["b"], "extra": ["stray"]}
    assert report.objects == 3


def test_upstream_ahead_of_the_manifest_is_lag_not_drift() -> None:
    published = [f("a"), f("b")]
    listing = [f("a", size=20), f("b"), f("c")]  # a changed, c new, nothing deleted
    report = diff_mirror(listing, published, objects_of(published))
    assert report.lag == 2 and sorted(report.examples["lag"]) == ["a", "c"]
    assert report.drift == 0
    assert report.completion_pct == pytest.approx(33.333)


def test_entries_gone_upstream_are_pending_deletes() -> None:
    published = [f("a"), f("old")]
    report = diff_mirror([f("a")], published, objects_of(published))
    assert report.pending_deletes == 1 and report.lag == 0 and report.completion_pct == 100.0


def test_type_change_counts_as_lag() -> None:
    report = diff_mirror([d("a")], [f("a")], [("a", 10)])
    # the upstream dir 'a/' and the published file 'a' are different keys: one lag, one pending delete
    assert report.lag == 1 and report.pending_deletes == 1


def test_never_synced_mirror_is_zero_percent_complete() -> None:
    report = diff_mirror(None, None, [])
    assert report.completion_pct == 0.0 and report.drift == 0


def test_the_repair_list_names_what_a_sync_must_upload_again_or_delete() -> None:
    rows = [d("a"), f("a/x", 10), f("a/y", 10), f("b", 5)]
    stored = [("a/", 100), ("a/y", 9), ("b", 5), ("stray", 1), ("stray-dir/", 0)]  # a/x gone, a/y damaged
    repair = RepairList()
    diff_mirror(rows, rows, stored, repair=repair)
    assert repair.reupload == ["a/x", "a/y"] and repair.delete == ["stray", "stray-dir/"] and repair.complete
    assert RepairList.from_json(repair.to_json()) == repair


def test_a_clean_mirror_needs_no_repair_and_a_huge_drift_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [f(f"p{i:03d}") for i in range(50)]
    clean = RepairList()
    diff_mirror(rows, rows, objects_of(rows), repair=clean)
    assert not clean
    monkeypatch.setattr("mirrorkeeper.state.REPAIR_LIMIT", 20)
    capped = RepairList()
    diff_mirror(rows, rows, [], repair=capped)
    assert len(capped.reupload) == 20 and not capped.complete
