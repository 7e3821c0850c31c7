"""Listing a real rsync daemon: every name rsync can carry comes back exactly."""

import os
import sys
import time
from pathlib import Path

import pytest

from mirrorkeeper.entries import EntryType
from mirrorkeeper.errors import UpstreamError
from mirrorkeeper.sync.rsync import RsyncClient
from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import add_hostile_names, write_file


def test_hostile_names_newline_included_list_exactly(upstream: Path) -> None:
    written = add_hostile_names(upstream, include_newline=True)
    os.symlink("target -> with arrow", upstream / "link -> with arrow")
    write_file(upstream / "big", b"x" * 1_234_567, 1_600_000_000)
    with RsyncDaemon(upstream) as daemon:
        listing = RsyncClient().list(daemon.url)
    assert listing.complete, listing.problem
    by_path = {e.path.decode(): e for e in listing.entries}
    for rel in written:
        assert by_path[rel].type is EntryType.FILE, rel
        assert by_path[rel].mtime == int((upstream / rel).stat().st_mtime), rel
    assert by_path["big"].size == 1_234_567 and by_path["big"].mtime == 1_600_000_000
    link = by_path["link -> with arrow"]
    assert (link.type, link.target) == (EntryType.SYMLINK, b"target -> with arrow")
    assert by_path["nest ed"].type is EntryType.DIR
    # nothing else: every listed path is one we wrote, or a directory on the way to one
    dirs = {str(Path(rel).parent) for rel in written} | {str(p) for rel in written for p in Path(rel).parents}
    assert set(by_path) <= set(written) | dirs | {"big", "link -> with arrow"}


def test_nfc_and_nfd_names_stay_distinct(upstream: Path) -> None:
    write_file(upstream / "caf\u00e9", b"nfc", 1)
    write_file(upstream / "cafe\u0301", b"nfd", 2)
    with RsyncDaemon(upstream) as daemon:
        names = sorted(e.path for e in RsyncClient().list(daemon.url).entries)
    assert names == sorted(["caf\u00e9".encode(), "cafe\u0301".encode()])


def fake_rsync(tmp_path: Path, body: str) -> RsyncClient:
    """An "rsync" that prints listing lines on a schedule (``body`` is Python; ``line(name)`` prints one)."""
    program = tmp_path / "fake-rsync"
    program.write_text(
        "#!" + sys.executable + "\nimport sys, time\n"
        "def line(name):\n"
        "    sys.stdout.write(f'-rw-r--r--              3 2026/01/02 03:04:05 {name}\\n')\n"
        "    sys.stdout.flush()\n" + body
    )
    program.chmod(0o755)
    return RsyncClient(command=str(program), timeout=1)


def test_a_listing_that_stops_arriving_is_stopped_and_fails_even_with_entries_in_hand(tmp_path: Path) -> None:
    rsync = fake_rsync(tmp_path, "line('a')\nline('b')\ntime.sleep(60)\n")
    started = time.monotonic()
    with rsync.start_list("rsync://127.0.0.1:1/mirror/") as run, pytest.raises(UpstreamError) as failure:
        run.listing()
    assert time.monotonic() - started < 10
    assert "stalled: rsync received nothing for 1 s" in str(failure.value)
    assert "--rsync-timeout" in str(failure.value)
    assert run.digest is None  # a stalled listing never vouches for "unchanged"


def test_a_slow_listing_that_keeps_arriving_is_not_stopped(tmp_path: Path) -> None:
    # Seven entries 0.4 s apart: 2.4 s in all, more than twice the 1 s stall limit.
    rsync = fake_rsync(tmp_path, "for n in range(7):\n    line(f'f{n}')\n    time.sleep(0.4)\n")
    with rsync.start_list("rsync://127.0.0.1:1/mirror/") as run:
        listing = run.listing()
    assert listing.complete and [e.path for e in listing.entries] == [f"f{n}".encode() for n in range(7)]
