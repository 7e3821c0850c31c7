"""How the sync engine cuts work into fetch batches and feeds its upload threads."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.sync.planner import Change, ChangeKind
from mirrorkeeper.sync.run import make_batches, run_bounded


def changes(*sizes: int) -> list[Change]:
    return [Change(n, Entry(f"f{n}", EntryType.FILE, size, 0), None, ChangeKind.ADD) for n, size in enumerate(sizes)]


def shape(batches: list[list[Change]]) -> list[list[int]]:
    return [[c.index for c in batch] for batch in batches]


def test_many_small_files_are_cut_by_count_so_fetching_overlaps_uploading() -> None:
    # GIVEN 25 tiny files, far below the byte budget
    # WHEN batched at most 10 files a batch
    batches = make_batches(changes(*[1] * 25), batch_bytes=1_000_000, batch_files=10)
    # THEN there are three batches, in order, none over the count
    assert shape(batches) == [list(range(10)), list(range(10, 20)), list(range(20, 25))]


def test_bytes_still_bound_a_batch_and_a_file_larger_than_the_budget_goes_alone() -> None:
    batches = make_batches(changes(40, 40, 40, 500, 10), batch_bytes=100, batch_files=1000)
    assert shape(batches) == [[0, 1], [2], [3], [4]]


def test_the_default_count_cap_applies() -> None:
    from mirrorkeeper.sync.run import BATCH_FILES

    batches = make_batches(changes(*[1] * (BATCH_FILES + 1)), batch_bytes=10**12)
    assert [len(b) for b in batches] == [BATCH_FILES, 1]


def test_run_bounded_never_has_more_than_the_limit_drawn_and_unfinished() -> None:
    # GIVEN items drawn lazily, and work that takes a moment
    lock = threading.Lock()
    drawn_unfinished, peak, done = 0, 0, []

    def items() -> Iterator[int]:
        nonlocal drawn_unfinished, peak
        for n in range(200):
            with lock:
                drawn_unfinished += 1
                peak = max(peak, drawn_unfinished)
            yield n

    def work(n: int) -> None:
        nonlocal drawn_unfinished
        time.sleep(0.001)
        with lock:
            drawn_unfinished -= 1
            done.append(n)

    # WHEN run with 4 threads and at most 8 queued or running
    with ThreadPoolExecutor(4) as pool:
        run_bounded(pool, work, items(), limit=8)
    # THEN every item ran, and the queue never grew past the limit
    assert sorted(done) == list(range(200))
    assert peak <= 8


def test_run_bounded_stops_at_the_first_failure_and_raises_it() -> None:
    started: list[int] = []

    def work(n: int) -> None:
        started.append(n)
        if n == 3:
            raise ValueError("item 3 failed")
        time.sleep(0.002)

    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match="item 3 failed"):
        run_bounded(pool, work, range(1000), limit=4)
    # a few items may have been queued behind the failure, but the run did not go on
    assert len(started) < 20
