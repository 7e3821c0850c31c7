"""The manifest format: sorted, streamed, damage detected rather than trusted."""

import gzip
import io

import pytest

from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.manifest import ManifestError, ManifestHeader, read_manifest, write_manifest
from mirrorkeeper_dev.sampletree import HOSTILE_NAMES, NEWLINE_NAME

HEADER = ManifestHeader("2026-01-01T00:00:00Z", "rsync://up/mod/", 0)


def entries_for(names: list[str]) -> list[Entry]:
    return sorted(
        (Entry(n, EntryType.FILE, i, 1_700_000_000 + i, None, f"{i:064x}") for i, n in enumerate(names)),
        key=lambda e: e.path,
    )


def roundtrip(entries: list[Entry]) -> list[Entry]:
    buffer = io.BytesIO()
    write_manifest(buffer, ManifestHeader(HEADER.generated, HEADER.upstream, len(entries)), entries)
    buffer.seek(0)
    header, parsed = read_manifest(buffer)
    assert header.upstream == HEADER.upstream
    return list(parsed)


def test_every_hostile_name_and_symlink_round_trips() -> None:
    entries = entries_for([*HOSTILE_NAMES, NEWLINE_NAME, "d/\u00e9"])
    entries.append(Entry("zz-link", EntryType.SYMLINK, 9, 5, "a -> b\\c", None))
    entries.sort(key=lambda e: e.path)
    assert roundtrip(entries) == entries


def test_out_of_order_entries_are_refused_on_write() -> None:
    with pytest.raises(ManifestError, match="out of order"):
        write_manifest(io.BytesIO(), HEADER, [Entry("b", EntryType.FILE, 1, 1), Entry("a", EntryType.FILE, 1, 1)])


def test_truncated_manifest_is_an_error_not_a_shorter_mirror() -> None:
    entries = entries_for([f"f{i}" for i in range(50)])
    buffer = io.BytesIO()
    write_manifest(buffer, ManifestHeader("t", "u", len(entries)), entries)
    cut = io.BytesIO(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    _, parsed = read_manifest(cut)
    with pytest.raises(ManifestError):
        list(parsed)


def test_header_promise_catches_lost_lines() -> None:
    body = gzip.compress(b'{"format":"mirrorkeeper-manifest","version":1,"entries":2}\n["a","f",1,1,null,null]\n')
    _, parsed = read_manifest(io.BytesIO(body))
    with pytest.raises(ManifestError, match="promises 2"):
        list(parsed)


def test_foreign_file_is_refused() -> None:
    with pytest.raises(ManifestError, match="not a mirrorkeeper-manifest"):
        read_manifest(io.BytesIO(gzip.compress(b'{"hello": 1}\n')))
