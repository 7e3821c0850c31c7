"""rsync --list-only line parsing. (The real daemon's output is exercised in tests/functional.)"""

import pytest

from mirrorkeeper.entries import EntryType
from mirrorkeeper.sync.rsync import RawEntry, parse_listing_line


def test_symlink_name_and_target_both_containing_arrows_split_by_target_length() -> None:
    parsed = parse_listing_line(b"lrwxrwxrwx          10 2026/11/25 17:31:51 lnk -> z -> sub/t -> u")
    assert parsed == RawEntry(b"lnk -> z", EntryType.SYMLINK, 10, 1795627911, b"sub/t -> u")


def test_escapes_decode_to_bytes_and_times_are_utc() -> None:
    parsed = parse_listing_line(b"-rw-r--r--           1 1970/01/01 00:00:01 caf\\#303\\#251\\#012x")
    assert parsed == RawEntry("café\nx".encode(), EntryType.FILE, 1, 1)


def test_root_is_not_an_entry_and_devices_are_reported() -> None:
    assert parse_listing_line(b"drwxr-xr-x        4096 2026/11/25 17:31:51 .") is None
    skipped = parse_listing_line(b"crw-rw-rw-           0 2026/11/25 17:31:51 null")
    assert isinstance(skipped, tuple) and skipped[0] == b"null"


@pytest.mark.parametrize(
    "line", [b"garbage", b"-rw-r--r-- 1,234 2026/11/25 17:31:51 x", b"lrwxrwxrwx 50 2026/11/25 17:31:51 short -> t"]
)
def test_malformed_lines_raise(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_listing_line(line)
