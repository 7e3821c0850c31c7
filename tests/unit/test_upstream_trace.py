"""Upstream's trace as the sync reads it (sync/upstream.py), and what health makes of a trace a
later run vouched for (verify/health.py)."""

from pathlib import Path

import pytest

from mirrorkeeper.entries import Entry, EntryType
from mirrorkeeper.state import Level
from mirrorkeeper.sync.upstream import TRACE_LIMIT, UpstreamTrace, busy_signs, read_trace, why_not_a_trace
from mirrorkeeper.verify.drift import DriftReport
from mirrorkeeper.verify.health import Vouched, assess, current_as_of
from mirrorkeeper.verify.probes import EndpointReport, Outcome, ProbeKind, ProbeResult

HOUR = 3600.0


@pytest.mark.parametrize(
    ("body", "serial", "date"),
    [
        # ftpsync's own trace: the date -u line, then its fields
        (
            b"Wed Nov 25 14:00:01 UTC 2026\nDate: Wed, 25 Nov 2026 14:00:01 +0000\nArchive serial: 2026112501\n",
            "2026112501",
            1795615201.0,
        ),
        # the first line alone (older ftpsync)
        (b"Wed Nov 25 14:00:01 UTC 2026\n", "", 1795615201.0),
        # ours
        (b"Wed Nov 25 14:00:01 UTC 2026\nEpoch: 1795615201\n", "", 1795615201.0),
        # TIME / timestamp.txt: epoch seconds first
        (b"1795615201 www.example.org\n", "", 1795615201.0),
        (b"no date here\n", "", None),
    ],
)
def test_a_trace_gives_its_serial_and_date_whichever_convention_it_follows(
    body: bytes, serial: str, date: float | None
) -> None:
    trace = UpstreamTrace("project/trace/master", body)
    assert (trace.serial, trace.date) == (serial, date)
    assert trace.summary()["sha256"] == trace.sha256 and len(trace.sha256) == 64


def test_what_is_not_a_trace_is_named(tmp_path: Path) -> None:
    cases = {
        "missing": None,
        "huge": b"x" * (TRACE_LIMIT + 1),
        "binary": b"serial\0",
        "latin1": "Datum: März".encode("latin-1"),
    }
    problems = {}
    for name, body in cases.items():
        if body is not None:
            (tmp_path / name).write_bytes(body)
        found = read_trace(name, tmp_path / name)
        assert isinstance(found, str)
        problems[name] = found
    assert "has no missing" in problems["missing"] and "not a trace" in problems["huge"]
    assert "binary" in problems["binary"] and "not UTF-8" in problems["latin1"]
    assert isinstance(read_trace("ok", _write(tmp_path / "ok", b"Date: x\n")), UpstreamTrace)


def _write(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


def test_the_listing_tells_a_missing_trace_from_a_huge_one_or_a_directory() -> None:
    entries = [
        Entry("TIME", EntryType.FILE, 200_000, 0),
        Entry("project/trace", EntryType.DIR, 0, 0),
    ]
    assert "200000 bytes" in why_not_a_trace("?", "TIME", entries)
    assert "is a directory" in why_not_a_trace("?", "project/trace", entries)
    assert why_not_a_trace("?", "project/trace/master", entries) == "upstream lists no project/trace/master"


def test_busy_signs_are_ftpsyncs_marker_at_the_root_and_the_operators_marker() -> None:
    entries = [
        Entry("Archive-Update-in-Progress-ftp.example.org", EntryType.FILE, 0, 0),
        Entry("pool/Archive-Update-in-Progress-deep", EntryType.FILE, 0, 0),  # not at the root: data
        Entry("repo/.updating", EntryType.FILE, 0, 0),
    ]
    assert busy_signs(entries, "") == ["Archive-Update-in-Progress-ftp.example.org at upstream's root"]
    assert busy_signs(entries, "repo/.updating")[-1] == "the busy marker repo/.updating"
    assert busy_signs(entries[1:2], "repo/.missing") == []


def _endpoint(trace_epoch: int) -> EndpointReport:
    report = EndpointReport("http", "http://127.0.0.1/", trace_epoch=trace_epoch)
    report.results.append(ProbeResult(ProbeKind.ROOT, "", Outcome.OK, "", 1.0))
    return report


def test_a_trace_a_later_run_vouched_for_is_as_fresh_as_that_run() -> None:
    now = 1_800_000_000.0
    published = int(now - 3 * 24 * HOUR)  # upstream has not changed for three days
    old = _endpoint(published)
    vouched = Vouched(published, now - 600)  # an upstream-unchanged run ten minutes ago
    assert current_as_of(old, vouched) == now - 600
    assert current_as_of(_endpoint(published + 1), vouched) == published + 1  # another trace: not vouched
    fresh = assess(now, HOUR, ["http"], _no_drift(), [old], None, vouched=vouched)
    assert fresh.levels["http"] is Level.OK and fresh.freshness("http") == 600
    stale = assess(now, HOUR, ["http"], _no_drift(), [old], None)
    assert stale.levels["http"] is Level.DOWN and "last known current 3.0 days ago" in stale.reasons("http")[0]


def _no_drift() -> DriftReport:
    return DriftReport(manifest_generated="2026-11-25T14:00:00Z")
