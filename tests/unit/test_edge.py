"""Invalidations on constructed inputs (no network): which paths, how they are batched within
CloudFront's limits, how a throttled or slow CloudFront is waited for, what the record says, and how
serve-http's cache follows it."""

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from mirrorkeeper.errors import StorageError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.serve.routing import route
from mirrorkeeper.serve.served import EdgeWatch, EdgeWatches, ObjectCache, ObjectInfo
from mirrorkeeper.state import EdgeBatch, EdgeRecord, EdgeStatus
from mirrorkeeper.sync.edge import (
    MAX_FILE_PATHS,
    MAX_WILDCARDS,
    CloudFront,
    EdgePaths,
    coarsened,
    edge_path,
    within_limits,
)
from mirrorkeeper_dev.sampletree import HOSTILE_NAMES


@pytest.mark.parametrize(
    ("relative", "path"),
    [
        ("repo/README", "/repo/README"),
        ("a b+c%.txt", "/a%20b%2Bc%25.txt"),
        ("über/ß.rpm", "/%C3%BCber/%C3%9F.rpm"),
        ("q?#&;=,@$", "/q%3F%23%26%3B%3D%2C%40%24"),
        ("~'()!-_.", "/~'()!-_."),
        ("dir/", "/dir/"),
        ("", "/"),
        # a '*' in a name would be a wildcard anyway: cut after it, covering the name
        ("d/x*y.iso", "/d/x*"),
    ],
)
def test_an_invalidation_path_is_the_url_path_the_cloudfront_function_sends_to_the_origin(
    relative: str, path: str
) -> None:
    assert edge_path(relative) == path


@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if "*" not in n])
def test_every_spelling_of_a_hostile_name_reaches_the_cache_key_its_invalidation_path_names(name: str) -> None:
    # CloudFront keys its cache by the URI the viewer-request function returns (routing is its twin)
    for spelling in (quote(name, safe=""), quote(name, safe="~!*'()+,;=:@$&")):
        assert route("/dir/" + spelling).origin_uri == edge_path("dir/" + name)


def test_a_directory_past_five_changes_is_one_wildcard_that_covers_its_subdirectories() -> None:
    paths = EdgePaths()
    for number in range(5):
        paths.add(f"small/f{number}")
    for number in range(6):
        paths.add(f"big/f{number}")
    paths.add("big/sub/deeper")
    paths.add("big/")  # the directory's own page is listed in its parent
    assert paths.take() == ["/big/*", "/big/", *(f"/small/f{n}" for n in range(5))]
    assert paths.take() == []  # each batch starts empty


def test_a_batch_over_cloudfronts_limits_is_coarsened_until_it_fits_and_still_covers_everything() -> None:
    files = [f"/r{n % 40}/d{n}/f" for n in range(MAX_FILE_PATHS + 1)]
    wildcards = [f"/w{n}/*" for n in range(MAX_WILDCARDS + 1)]
    for original in (files, wildcards, [*files[:10], *wildcards]):
        assert not within_limits(original)
        result = coarsened(original)
        assert within_limits(result), result
        batch = EdgeBatch("data", result)
        assert all(batch.covers(p[:-1] + "x" if p.endswith("*") else p) for p in original)
    # the deepest level that fits: one wildcard per top directory when forty of them hold the files
    assert len(coarsened(files)) == 1  # forty wildcards do not fit; the root's does
    assert coarsened(wildcards) == ["/*"]
    assert coarsened([*files, "/"]) == ["/*", "/"]  # the root's page is not below its wildcard
    assert coarsened([*files[:5], "/a/b/*"]) == [*files[:5], "/a/b/*"]


def test_a_mirror_of_a_host_is_never_coarsened_above_its_own_directory() -> None:
    files = [f"/debian/r{n % 40}/d{n}/f" for n in range(MAX_FILE_PATHS + 1)]
    assert coarsened(files, floor=1) == ["/debian/*"]
    assert coarsened(files) == ["/debian/*"]  # the deepest level that fits is its directory anyway
    spread = [f"/debian/w{n}/*" for n in range(MAX_WILDCARDS + 1)]
    assert coarsened(spread, floor=1) == ["/debian/*"]


class FakeCloudFront:
    """CreateInvalidation refuses with ``refusals`` first; GetInvalidation answers ``statuses`` in turn."""

    def __init__(self, refusals: list[str] = [], statuses: list[str] = []) -> None:  # noqa: B006 - copied
        self.refusals, self.statuses = list(refusals), list(statuses)
        self.created: list[dict[str, Any]] = []
        self.polls = 0

    def create_invalidation(self, **request: Any) -> dict[str, Any]:
        if self.refusals:
            raise ClientError({"Error": {"Code": self.refusals.pop(0), "Message": "no"}}, "CreateInvalidation")
        self.created.append(request)
        return self._answer("InProgress")

    def get_invalidation(self, **request: Any) -> dict[str, Any]:
        self.polls += 1
        return self._answer(self.statuses.pop(0))

    def _answer(self, status: str) -> dict[str, Any]:
        return {"Invalidation": {"Id": "I2J0I21PCUYOIK", "Status": status, "CreateTime": datetime.now(UTC)}}


def sender(client: FakeCloudFront, wait: float) -> tuple[CloudFront, list[float]]:
    slept: list[float] = []
    return CloudFront(lambda: client, "E2QWRUHAPOMQZL", "run-1", wait, sleep=slept.append, clock=lambda: 42.0), slept


def test_too_many_in_progress_is_waited_out_then_the_batch_is_polled_until_complete() -> None:
    client = FakeCloudFront(["TooManyInvalidationsInProgress"] * 2, ["InProgress", "Completed"])
    edge, slept = sender(client, wait=300)
    batch = EdgeBatch("data", ["/a", "/b/*"])
    edge.invalidate(batch)
    assert (batch.status, batch.id, batch.completed) == (EdgeStatus.COMPLETED, "I2J0I21PCUYOIK", 42.0)
    assert slept == [2.0, 4.0, 2.0, 4.0] and client.polls == 2
    (request,) = client.created
    assert request["DistributionId"] == "E2QWRUHAPOMQZL"
    assert request["InvalidationBatch"] == {
        "Paths": {"Quantity": 2, "Items": ["/a", "/b/*"]},
        "CallerReference": "mirrorkeeper-run-1-data",
    }
    assert edge.wait_left == 300 - 12


def test_throttling_past_the_wait_leaves_the_batch_throttled_and_never_raises(caplog: Any) -> None:
    client = FakeCloudFront(["TooManyInvalidationsInProgress"] * 100)
    edge, slept = sender(client, wait=10)
    batch = EdgeBatch("final", ["/a"])
    edge.invalidate(batch)
    assert batch.status is EdgeStatus.THROTTLED and batch.lost and "TooManyInvalidationsInProgress" in batch.error
    assert sum(slept) == 10 and not client.created
    assert "CloudFront did not take 1 invalidation paths" in caplog.text
    # AND the rest of the run waits no more
    later = EdgeBatch("final", ["/b"])
    client.refusals = []
    edge.invalidate(later)
    assert later.status is EdgeStatus.IN_PROGRESS and sum(slept) == 10


def test_a_refusal_other_than_throttling_is_not_retried() -> None:
    edge, slept = sender(FakeCloudFront(["AccessDenied"]), wait=300)
    batch = EdgeBatch("data", ["/a"])
    edge.invalidate(batch)
    assert batch.status is EdgeStatus.FAILED and "AccessDenied" in batch.error and slept == []


def test_with_no_wait_the_batch_is_sent_and_left_in_progress() -> None:
    client = FakeCloudFront()
    edge, slept = sender(client, wait=0)
    batch = EdgeBatch("data", ["/a"])
    edge.invalidate(batch)
    assert batch.status is EdgeStatus.IN_PROGRESS and batch.completed == 0 and slept == [] and client.polls == 0


def test_the_record_says_which_paths_a_completed_invalidation_covered_and_when() -> None:
    record = EdgeRecord(
        "run-2",
        "run-1",
        "E2QWRUHAPOMQZL",
        [
            EdgeBatch("data", ["/repo/a%20b.rpm", "/big/*"], EdgeStatus.COMPLETED, "I1", 10.0, 20.0),
            EdgeBatch("final", ["/repo/repomd.xml"], EdgeStatus.IN_PROGRESS, "I2", 30.0),
            EdgeBatch("final", ["/gone"], EdgeStatus.THROTTLED, error="TooManyInvalidationsInProgress"),
        ],
    )
    assert record.invalidated("repo/a b.rpm", before=20.0) and record.invalidated("big/x/y", before=25.0)
    assert not record.invalidated("repo/a b.rpm", before=19.0)  # completed after the probe
    assert not record.invalidated("repo/repomd.xml", before=99.0)  # never seen complete
    assert not record.invalidated("repo/other.rpm", before=99.0)
    summary = record.summary()
    assert (summary["paths"], summary["wildcards"], summary["completed"], summary["not_invalidated"]) == (
        4,
        1,
        False,
        1,
    )
    assert [b["id"] for b in summary["batches"]] == ["I1", "I2", ""]
    assert EdgeRecord.from_json(record.to_json()) == record
    assert EdgeRecord.from_json({"run_id": "x", "batches": [{"paths": []}]}) is None


class FakeState:
    """The record as StateStore.edge_record_since serves it, one version after another."""

    def __init__(self) -> None:
        self.layout = MirrorLayout.create("mirror-test", "m")
        self.version: tuple[EdgeRecord | None, str] = (None, "")
        self.reads = 0
        self.failing = False

    def edge_record_since(self, etag: str) -> tuple[EdgeRecord | None, str] | None:
        if self.failing:
            raise StorageError("S3 refused to read the record: AccessDenied")
        self.reads += 1
        return None if etag and etag == self.version[1] else self.version


def test_serve_http_drops_what_each_sync_invalidated_and_everything_after_a_missed_run() -> None:
    state, now = FakeState(), [0.0]
    cache = ObjectCache(3600, clock=lambda: now[0])
    watch = EdgeWatch(state, cache, every=2.0, clock=lambda: now[0])  # type: ignore[arg-type]
    info = ObjectInfo(1, 1, '"e"', "text/plain", None, None)
    keys = ["m/pub/repo/a b.rpm", "m/pub/repo/keep", "m/pub/big/x", "m/pub/big/y/z", "m/pub/repo/"]

    def fill() -> None:
        for key in keys:
            cache.store(key, info)

    def cached() -> set[str]:
        return {key for key in keys if cache.lookup(key) is not None}

    # GIVEN the first look (nothing cached yet) and a full cache
    watch.check()
    fill()
    # WHEN a run records its batches: at most one look per interval, then exactly those paths go
    state.version = (EdgeRecord("run-2", "", "", [EdgeBatch("data", ["/repo/a%20b.rpm", "/big/*", "/repo/"])]), "1")
    watch.check()
    assert cached() == set(keys) and state.reads == 1
    now[0] = 2.0
    watch.check()
    assert cached() == {"m/pub/repo/keep"}
    # AND an unchanged record costs a 304 and drops nothing
    fill()
    now[0] = 4.0
    watch.check()
    assert cached() == set(keys) and state.reads == 3
    # AND a record that does not follow the one seen (a run was missed) empties the cache
    state.version = (EdgeRecord("run-4", "run-3", "", [EdgeBatch("data", ["/big/x"])]), "2")
    now[0] = 6.0
    watch.check()
    assert cached() == set()


def test_on_a_host_a_request_asks_the_watch_of_the_mirror_it_falls_under() -> None:
    asked: list[str] = []

    class Watch:
        def __init__(self, name: str) -> None:
            self.name = name

        def check(self) -> None:
            asked.append(self.name)

    watches = EdgeWatches("m/pub/", {"debian": Watch("debian"), "linux/arch": Watch("arch")})  # type: ignore[dict-item]
    for key in ("m/pub/debian/dists/Release", "m/pub/linux/arch/core.db", "m/pub/", "m/pub/debian-security/x"):
        watches.check(key)
    assert asked == ["debian", "arch"]  # the front page and other trees cost no look
    host_of_one = EdgeWatches("m/pub/", {"": Watch("root")})  # type: ignore[dict-item]
    host_of_one.check("m/pub/anything")
    assert asked[-1] == "root"


def test_what_serve_http_cached_while_the_record_was_unreadable_goes_at_the_first_look_that_works() -> None:
    state, now = FakeState(), [0.0]
    cache = ObjectCache(3600, clock=lambda: now[0])
    watch = EdgeWatch(state, cache, every=2.0, clock=lambda: now[0])  # type: ignore[arg-type]
    info = ObjectInfo(1, 1, '"e"', "text/plain", None, None)
    state.failing = True
    watch.check()
    cache.store("m/pub/a", info)
    state.failing = False
    now[0] = 2.0
    watch.check()
    assert cache.lookup("m/pub/a") is None


@pytest.mark.parametrize("follow_republish", [True, False])
def test_a_changed_trace_empties_the_cache_only_of_a_front_end_that_follows_the_sync(follow_republish: bool) -> None:
    # GIVEN a cached data file, and a trace (no-cache, so never kept) read once
    cache = ObjectCache(3600, follow_republish=follow_republish)
    cache.store("pub/a.rpm", ObjectInfo(1, 1, '"a"', "application/x-rpm", None, None))
    trace = ObjectInfo(1, 1, '"t1"', "text/plain", "no-cache, max-age=0", None)
    cache.store("pub/.mirrorkeeper/trace", trace)
    # WHEN a sync republishes and the new trace is read
    cache.store("pub/.mirrorkeeper/trace", ObjectInfo(2, 1, '"t2"', "text/plain", "no-cache, max-age=0", None))
    # THEN a front end that follows the sync forgets the data file; one that ignores syncs (serve-http
    # --invalidation-poll 0, an edge whose invalidations go unheard) keeps it its whole TTL
    assert (cache.lookup("pub/a.rpm") is None) is follow_republish
    assert cache.lookup("pub/.mirrorkeeper/trace") is None
