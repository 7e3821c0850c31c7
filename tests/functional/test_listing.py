"""Listing a real rsync daemon: every name rsync can carry comes back exactly."""

import os
from pathlib import Path

from mirrorkeeper.entries import EntryType
from mirrorkeeper.rsync import RsyncClient
from mirrorkeeper.rsyncd import RsyncDaemon
from mirrorkeeper.sampletree import add_hostile_names, write_file


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
