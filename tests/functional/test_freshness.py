"""Freshness at upstream's speed, with real processes: the trace shortcut, an upstream caught
mid-update, our ftpsync trace and mirmon timestamp (read by Debian's real ``mirmon``)."""

import calendar
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper_dev.sampletree import write_file
from tests.functional.test_sync import DaemonFactory, mirror_files, sync
from tests.support import BUCKET, cli_env, run_cli, serve_cli, tree_files

OLD, NEW = 1_700_000_000, 1_700_000_100
TRACE = "project/trace/master"
MASTER_TRACE = b"""Wed Nov 25 14:00:01 UTC 2026
Date: Wed, 25 Nov 2026 14:00:01 +0000
Archive serial: 2026112501
Creator: ftpsync 20180513
"""


def repository(upstream: Path, trace: bytes = MASTER_TRACE) -> None:
    """A yum-like repository (data, then the index naming it) and upstream's trace, written last."""
    write_file(upstream / "repo/pool/a-1.rpm", b"package a 1", OLD)
    write_file(upstream / "repo/repodata/repomd.xml", b"<repomd>a-1</repomd>", OLD)
    write_file(upstream / TRACE, trace, OLD)


def report(s3: Any) -> dict[str, Any]:
    return dict(json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read()))


def served(s3: Any, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=BUCKET, Key="pub/" + key)["Body"].read())


def test_an_unchanged_upstream_trace_ends_the_run_with_four_requests_and_a_changed_one_lists(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    repository(upstream)
    daemon = rsync_daemon(upstream)
    traced = ("--upstream-trace", TRACE)
    # GIVEN a first run with the trace shortcut: it lists, publishes, and remembers upstream's trace
    code, summary, stderr = sync(daemon, endpoint, *traced)
    assert code == 0 and summary["result"] == "success", stderr
    assert report(s3)["upstream_trace"]["serial"] == "2026112501"
    # WHEN upstream changes a file but not its trace (as ftpsync never does), and the mirror syncs
    write_file(upstream / "repo/pool/a-1.rpm", b"package a 1, rebuilt", NEW)
    code, summary, stderr = sync(daemon, endpoint, *traced)
    # THEN the run ends at once: upstream unchanged, four S3 requests, nothing listed or published
    assert code == 0 and summary["result"] == "upstream-unchanged", stderr
    assert summary["s3_requests"] <= 4
    assert served(s3, "repo/pool/a-1.rpm") == b"package a 1"
    # WHEN upstream publishes a new trace
    write_file(upstream / TRACE, MASTER_TRACE.replace(b"2026112501", b"2026112502"), NEW)
    code, summary, stderr = sync(daemon, endpoint, *traced)
    # THEN the run lists and publishes what changed
    assert code == 0 and summary["result"] == "success", stderr
    assert served(s3, "repo/pool/a-1.rpm") == b"package a 1, rebuilt"
    # WHEN the trace stays unchanged but the last full listing is older than --full-listing-every
    state = json.loads(s3.get_object(Bucket=BUCKET, Key="state/upstream.json")["Body"].read())
    state["listed_at"] -= 2 * 86400
    s3.put_object(Bucket=BUCKET, Key="state/upstream.json", Body=json.dumps(state).encode())
    write_file(upstream / "repo/pool/b-1.rpm", b"package b 1", NEW)
    code, summary, stderr = sync(daemon, endpoint, *traced)
    # THEN it lists in full anyway
    assert code == 0 and summary["result"] == "success", stderr
    assert served(s3, "repo/pool/b-1.rpm") == b"package b 1"


@pytest.mark.parametrize(
    ("trace", "why"),
    [
        (None, "upstream lists no project/trace/master"),
        (b"x" * 100_000, "100000 bytes, not a trace"),
        (b"Archive serial: 1\n\0\0binary", "binary"),
        (b"\xff\xfe not utf-8", "not text"),
    ],
)
def test_a_missing_huge_or_binary_trace_falls_back_to_the_full_listing_and_says_why(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, trace: bytes | None, why: str
) -> None:
    repository(upstream)
    if trace is None:
        (upstream / TRACE).unlink()
    else:
        write_file(upstream / TRACE, trace, OLD)
    daemon = rsync_daemon(upstream)
    code, summary, stderr = sync(daemon, endpoint, "--upstream-trace", TRACE)
    assert code == 0 and summary["result"] == "success", stderr
    assert why in report(s3)["upstream_trace"]["problem"]  # made precise by the listing
    assert mirror_files(s3) == {k: v[0] for k, v in tree_files(upstream).items()}
    # AND the next run cannot take the shortcut either (no trace was remembered): it lists
    code, summary, stderr = sync(daemon, endpoint, "--upstream-trace", TRACE)
    assert code == 0 and summary["result"] == "no-change", stderr
    assert report(s3)["upstream_trace"]["problem"]


def once_the_run_holds_its_lease(s3: Any, action: Callable[[], object]) -> None:
    """Run ``action`` in the background once a sync holds its lease: it has listed upstream (or read
    its trace) by then, whatever time the machine's load made it take to start."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if s3.list_objects_v2(Bucket=BUCKET, Prefix="state/lock.json").get("KeyCount"):
                action()
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def test_an_upstream_mid_update_is_never_half_published_and_ends_with_exit_6(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    repository(upstream)
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint)[0] == 0
    published = mirror_files(s3)
    # GIVEN upstream mid-update: new data and index, and ftpsync's marker at its root
    write_file(upstream / "repo/pool/a-2.rpm", b"package a 2", NEW)
    write_file(upstream / "repo/repodata/repomd.xml", b"<repomd>a-2</repomd>", NEW)
    write_file(upstream / "Archive-Update-in-Progress-ftp-master.debian.org", b"", NEW)
    # WHEN the mirror syncs, willing to wait two seconds
    started = time.monotonic()
    code, summary, stderr = sync(daemon, endpoint, "--busy-wait", "2")
    # THEN it waited, looked again, and ended busy (exit 6) with nothing published
    assert code == 6 and summary["result"] == "upstream-busy", stderr
    assert time.monotonic() - started >= 2
    assert "Archive-Update-in-Progress-ftp-master.debian.org" in stderr and "--busy-wait" in stderr
    assert len(report(s3)["busy"]) >= 2
    assert mirror_files(s3) == published
    # WHEN the marker goes while a run waits
    once_the_run_holds_its_lease(s3, (upstream / "Archive-Update-in-Progress-ftp-master.debian.org").unlink)
    code, summary, stderr = sync(daemon, endpoint, "--busy-wait", "30")
    # THEN the run publishes the finished update, the marker never among it
    assert code == 0 and summary["result"] == "success", stderr
    assert report(s3)["busy"]
    assert mirror_files(s3) == {k: v[0] for k, v in tree_files(upstream).items()}


def test_an_operators_busy_marker_counts_too(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    repository(upstream)
    write_file(upstream / "repo/.updating", b"", OLD)
    code, _summary, stderr = sync(
        rsync_daemon(upstream), endpoint, "--busy-marker", "repo/.updating", "--busy-wait", "0"
    )
    assert code == 6 and "the busy marker repo/.updating" in stderr
    assert mirror_files(s3) == {}


def test_a_trace_that_changes_while_we_fetch_is_a_busy_upstream(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    repository(upstream)
    daemon = rsync_daemon(upstream)
    traced = ("--upstream-trace", TRACE, "--busy-wait", "0")
    assert sync(daemon, endpoint, *traced)[0] == 0
    # GIVEN an update whose data takes a few seconds to fetch (bandwidth-limited)
    write_file(upstream / "repo/pool/big.rpm", b"b" * 400_000, NEW)
    write_file(upstream / "repo/repodata/repomd.xml", b"<repomd>big</repomd>", NEW)
    write_file(upstream / TRACE, MASTER_TRACE.replace(b"2026112501", b"2026112502"), NEW)
    # WHEN upstream publishes again while we fetch (once the run holds its lease: it has read the trace)
    later = MASTER_TRACE.replace(b"2026112501", b"2026112503")
    once_the_run_holds_its_lease(s3, lambda: write_file(upstream / TRACE, later, NEW + 1))
    code, _summary, stderr = sync(daemon, endpoint, *traced, "--bwlimit", "100K")
    # THEN the run published its data but not the index that names it, and ended busy
    assert code == 6, stderr
    assert "changed while we fetched" in stderr
    assert served(s3, "repo/pool/big.rpm") == b"b" * 400_000
    assert served(s3, "repo/repodata/repomd.xml") == b"<repomd>a-1</repomd>"
    # AND the next run, upstream settled, publishes all of it
    code, _, stderr = sync(daemon, endpoint, *traced)
    assert code == 0, stderr
    assert served(s3, "repo/repodata/repomd.xml") == b"<repomd>big</repomd>"


def test_our_ftpsync_trace_and_timestamp_are_written_and_upstreams_own_file_is_never_overwritten(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    repository(upstream)
    daemon = rsync_daemon(upstream)
    about = ["--host-name", "mirrors.example.org", "--location", "Norway, Oslo", "--contact", "ops@example.org"]
    code, _, stderr = sync(daemon, endpoint, "--upstream-trace", TRACE, "--trigger", "cron", *about)
    assert code == 0, stderr
    # THEN the ftpsync trace has ftpsync's first line and fields, upstream's serial copied
    trace = served(s3, "project/trace/mirrors.example.org").decode()
    first, *lines = trace.splitlines()
    finished = calendar.timegm(time.strptime(first, "%a %b %d %H:%M:%S UTC %Y"))
    assert abs(finished - time.time()) < 120
    fields = dict(line.split(": ", 1) for line in lines)
    assert fields["Archive serial"] == "2026112501" and fields["Trigger"] == "cron"
    assert fields["Running on host"] == "mirrors.example.org" and fields["Maintainer"] == "ops@example.org"
    assert fields["Country"] == "Norway" and fields["Location"] == "Norway, Oslo"
    assert fields["Upstream-mirror"] == "127.0.0.1" and fields["Creator"].startswith("mirrorkeeper ")
    assert {"Date", "Date-Started", "Total bytes received"} <= fields.keys()
    # AND the timestamp's first token is the sync's epoch, as in our own trace
    epoch = int(served(s3, ".mirrorkeeper/timestamp").split()[0])
    assert f"Epoch: {epoch}".encode() in served(s3, ".mirrorkeeper/trace")
    # WHEN upstream publishes a file where ours would go
    write_file(upstream / "project/trace/mirrors.example.org", b"upstream's own file\n", NEW)
    code, _, stderr = sync(daemon, endpoint, *about)
    # THEN upstream's is mirrored as it is, on this run and on the next (which lists no change)
    assert code == 0, stderr
    assert served(s3, "project/trace/mirrors.example.org") == b"upstream's own file\n"
    code, summary, stderr = sync(daemon, endpoint, *about)
    assert code == 0 and summary["result"] == "no-change", stderr
    assert served(s3, "project/trace/mirrors.example.org") == b"upstream's own file\n"


def test_mirmon_reads_our_timestamp_and_ftpsync_trace_over_http_and_ftp(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    repository(upstream)
    assert sync(rsync_daemon(upstream), endpoint, "--host-name", "mirrors.example.org")[0] == 0
    epoch = int(served(s3, ".mirrorkeeper/timestamp").split()[0])
    with serve_cli("serve-http", endpoint) as http_port, serve_cli("serve-ftp", endpoint) as ftp_port:
        roots = [f"http://127.0.0.1:{http_port}/", f"ftp://127.0.0.1:{ftp_port}/"]
        # WHEN Debian's mirmon probes both front ends, as a mirror list's checker would: once for our
        # timestamp, once for the ftpsync trace, at the same time (mirmon waits in steps of 10 s)
        checks = {}
        for probed in (".mirrorkeeper/timestamp", "project/trace/mirrors.example.org"):
            work = tmp_path / probed.replace("/", "_")
            work.mkdir()
            (work / "list").write_text("".join(f"no {root}\n" for root in roots))
            (work / "state").write_text("")
            (work / "mirmon.conf").write_text(
                f"project_name mirrorkeeper\nproject_url http://127.0.0.1/\nmirror_list {work / 'list'}\n"
                f"state {work / 'state'}\nweb_page {work / 'index.html'}\n"
                "countries /usr/share/mirmon/countries.list\nicons icons\n"
                f"probe /usr/bin/probe -t %TIMEOUT% %URL%{probed}\n"
            )
            checks[probed] = (
                work,
                subprocess.Popen(
                    ["mirmon", "-q", "-c", str(work / "mirmon.conf"), "-get", "all"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=cli_env(endpoint),
                ),
            )
        for probed, (work, mirmon) in checks.items():
            said, _ = mirmon.communicate(timeout=60)
            assert mirmon.returncode == 0, said
            # THEN both front ends are probed successfully, and the timestamp's age is the sync's time
            # (Debian's mirmon reads only the first word of a trace's `date -u` line, its weekday)
            state = {line.split()[0]: line.split() for line in (work / "state").read_text().splitlines()}
            for root in roots:
                _url, age, status = state[root][:3]
                assert status == "ok", (probed, state[root])
                if probed == ".mirrorkeeper/timestamp":
                    assert abs(int(age) - epoch) <= 1, state[root]


def test_the_command_line_documents_exit_6_and_refuses_a_trace_outside_the_module(endpoint: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mirrorkeeper", "sync", "--help"], capture_output=True, text=True, check=True
    )
    assert "6  upstream busy" in result.stdout and "--upstream-trace" in result.stdout
    args = ["sync", "--upstream", "rsync://127.0.0.1:1/m/", "--bucket", BUCKET, "--upstream-trace", "../etc/passwd"]
    refused = run_cli(args, endpoint)
    assert refused.returncode == 2 and "--upstream-trace" in refused.stderr and "../etc/passwd" in refused.stderr


def test_verify_tells_an_unchanged_upstream_from_a_stale_mirror_and_shows_upstreams_trace(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    repository(upstream)
    daemon = rsync_daemon(upstream)
    traced = ("--upstream-trace", TRACE)
    assert sync(daemon, endpoint, *traced)[0] == 0
    # GIVEN our served trace is three days old (upstream has not changed since), as the last
    # successful run recorded it, and a run just now found upstream's trace unchanged
    old = int(time.time()) - 3 * 86400
    body = served(s3, ".mirrorkeeper/trace")
    epoch = int(body.split(b"Epoch: ")[1].split()[0])
    s3.put_object(Bucket=BUCKET, Key="pub/.mirrorkeeper/trace", Body=body.replace(b"%d" % epoch, b"%d" % old))
    state = json.loads(s3.get_object(Bucket=BUCKET, Key="state/upstream.json")["Body"].read())
    s3.put_object(Bucket=BUCKET, Key="state/upstream.json", Body=json.dumps(state | {"published_epoch": old}).encode())
    code, summary, stderr = sync(daemon, endpoint, *traced)
    assert code == 0 and summary["result"] == "upstream-unchanged", stderr
    with serve_cli("serve-http", endpoint) as port:
        url = f"http://127.0.0.1:{port}/"
        # WHEN verify runs
        result = run_cli(["verify", "--bucket", BUCKET, "--http-url", url, "--json"], endpoint)
        # THEN the mirror is fresh: current as of that run, not three days stale
        assert result.returncode == 0, result.stdout + result.stderr
        status = json.loads(served(s3, ".mirrorkeeper/status.json"))
        assert status["protocols"]["http"]["delay"] < 600
        # AND the status page shows upstream's own trace, its date and serial, beside ours
        assert status["upstream_trace"]["serial"] == "2026112501"
        assert status["upstream_trace"]["date"] == "2026-11-25T14:00:01Z"
        page = served(s3, ".mirrorkeeper/status.html").decode()
        assert "Upstream&#x27;s trace" in page or "Upstream's trace" in page
        assert "2026112501" in page
        # WHEN no run vouches for that trace any more (upstream's trace forgotten)
        s3.delete_object(Bucket=BUCKET, Key="state/upstream.json")
        stale = run_cli(["verify", "--bucket", BUCKET, "--http-url", url], endpoint)
        # THEN it is as stale as its trace
        assert stale.returncode == 1 and "last known current 3.0 days ago" in stale.stdout + stale.stderr
