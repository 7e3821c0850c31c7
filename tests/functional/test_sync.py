"""`mirrorkeeper sync` as a real subprocess: real rsync daemon upstream, moto server as S3."""

import gzip
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorkeeper.aws import RequestCounter, s3_client
from mirrorkeeper.config import AwsConfig, SyncConfig
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.sync.rsync import RsyncClient
from mirrorkeeper.sync.run import SyncRun
from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import TreeSpec, add_hostile_names, generate_tree, write_file
from tests.faultproxy import fault_proxy
from tests.support import BUCKET, is_ours, run_cli, served_objects, tree_files

DaemonFactory = Callable[[Path], RsyncDaemon]


def sync(daemon: RsyncDaemon | str, endpoint: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    url = daemon if isinstance(daemon, str) else daemon.url
    result = run_cli(["sync", "--upstream", url, "--bucket", BUCKET, "--log-format", "json", *extra], endpoint)
    summary = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    return result.returncode, summary, result.stderr


def mirror_files(s3: Any) -> dict[str, bytes]:
    """Served files as clients see them: no directory markers, none of our trace files."""
    return {k: v["body"] for k, v in served_objects(s3).items() if k and not k.endswith("/") and not is_ours(k)}


def etags(s3: Any, prefix: str = "pub/") -> dict[str, str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def test_hostile_names_round_trip_byte_identical_with_mtimes(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN an upstream full of hostile names, an empty directory and symlinks
    add_hostile_names(upstream)
    (upstream / "empty dir").mkdir()
    write_file(upstream / "v1/pkg.rpm", b"rpm", 1_600_000_000)
    os.symlink("v1", upstream / "current")
    os.symlink("v1/pkg.rpm", upstream / "latest.rpm")
    os.symlink("../../etc/passwd", upstream / "escape")
    # WHEN synced
    code, summary, stderr = sync(rsync_daemon(upstream), endpoint)
    # THEN every file is in S3 byte for byte with its upstream mtime
    assert code == 0, stderr
    objects = served_objects(s3)
    expected = tree_files(upstream)
    for rel, (content, mtime) in expected.items():
        assert objects[rel]["body"] == content, rel
        assert objects[rel]["metadata"]["mtime"] == str(mtime), rel
    assert objects["v1/pkg.rpm"]["content_type"] == "application/x-rpm"
    # empty directories exist as markers; every directory has an index page naming its children
    assert "empty dir/" in objects
    assert b"with space.txt" in objects[""]["body"] and objects[""]["content_type"].startswith("text/html")
    # a file symlink is served as its target's content, a directory symlink as a redirect page
    assert objects["latest.rpm"]["body"] == b"rpm"
    assert objects["current"]["metadata"]["symlink-target"] == "v1"
    assert b'url=v1/"' in objects["current"]["body"]
    # the unsafe link is skipped and reported, never dropped silently
    assert "escape" not in objects
    assert summary["skipped_total"] == 1
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read())
    assert report["skipped"] == [{"path": "escape", "reason": report["skipped"][0]["reason"]}]
    assert "unsafe" in report["skipped"][0]["reason"]
    # private state lives outside the served prefix
    assert etags(s3, "state/manifest.jsonl.gz") and not any(k.startswith("pub/state/") for k in etags(s3))
    assert objects[".mirrorkeeper/trace"]["body"].splitlines()[0].endswith(time.strftime("%Y").encode())


def test_no_change_run_writes_no_content_and_costs_constant_requests(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    requests = []
    for files in (20, 400):
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in etags(s3, "")] or [{"Key": "x"}]})
        shutil.rmtree(upstream)
        generate_tree(upstream, TreeSpec(files=files, total_bytes=files * 200, seed=files))
        daemon = rsync_daemon(upstream)
        assert sync(daemon, endpoint)[0] == 0
        ours = ("pub/.mirrorkeeper/", f"pub/project/trace/{BUCKET}")  # the traces: rewritten by every run
        before = {k: v for k, v in etags(s3).items() if not k.startswith(ours)}
        code, summary, _ = sync(daemon, endpoint)
        after = {k: v for k, v in etags(s3).items() if not k.startswith(ours)}
        assert code == 0 and summary["result"] == "no-change"
        assert after == before
        requests.append(summary["s3_requests"])
    # HEAD the manifest, take the lease, three trace files, two copies of the report, release
    assert requests[0] == requests[1] <= 8


def test_one_changed_file_is_one_upload_and_deletions_follow(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    paths = generate_tree(upstream, TreeSpec(files=60, total_bytes=60_000))
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint)[0] == 0
    write_file(upstream / paths[3], b"new content", 1_800_000_000)
    (upstream / paths[7]).unlink()
    code, summary, stderr = sync(daemon, endpoint)
    assert code == 0, stderr
    assert summary["uploaded_files"] == 1 and summary["plan"]["delete_files"] == 1
    assert mirror_files(s3) == {k: v[0] for k, v in tree_files(upstream).items()}


def test_deletion_guard_holds_only_the_deletions_and_exits_4_until_forced(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    paths = generate_tree(upstream, TreeSpec(files=40, total_bytes=40_000))
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint)[0] == 0
    published = mirror_files(s3)
    for rel in paths[:10]:
        (upstream / rel).unlink()
    write_file(upstream / "added.bin", b"added", 1_800_000_000)
    write_file(upstream / paths[20], b"a security fix", 1_800_000_000)
    # WHEN a plan deletes a quarter of the files, above a floor of 5
    code, summary, stderr = sync(daemon, endpoint, "--min-delete-guard", "5")
    # THEN it exits 4 and says so, holds the deletions, and publishes the addition and the fix
    assert code == 4, stderr
    assert "deletion guard held 10 deletions" in stderr and "--force-delete" in stderr
    served = mirror_files(s3)
    assert served["added.bin"] == b"added" and served[paths[20]] == b"a security fix"
    assert all(served[rel] == published[rel] for rel in paths[:10])
    assert summary["held_deletions"] == 10
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read())
    assert report["result"] == "deletions-held" and len(report["held_deletion_examples"]) == 10
    # AND the held deletions stay in the manifest, so the next run finds them again
    code, _, _ = sync(daemon, endpoint, "--min-delete-guard", "5")
    assert code == 4
    # AND --force-delete lets them go
    code, summary, _ = sync(daemon, endpoint, "--force-delete")
    assert code == 0 and summary["deleted_objects"] >= 10
    assert mirror_files(s3) == {k: v[0] for k, v in tree_files(upstream).items()}


def test_routine_churn_below_the_floor_is_published_and_max_delete_caps_any_share(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    paths = generate_tree(upstream, TreeSpec(files=20, total_bytes=20_000))
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint)[0] == 0
    for rel in paths[:8]:
        (upstream / rel).unlink()
    # GIVEN a small repository losing 40 % of its files, fewer than the default floor of 100
    dry = run_cli(["sync", "--upstream", daemon.url, "--bucket", BUCKET, "--max-delete", "8", "--dry-run"], endpoint)
    # THEN the share does not count below the floor, and --max-delete 8 lets 8 through
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("delete  ") == 8
    code, _, stderr = sync(daemon, endpoint, "--max-delete", "7")
    assert code == 4 and "above --max-delete 7" in stderr
    code, _, stderr = sync(daemon, endpoint)
    assert code == 0, stderr
    assert mirror_files(s3) == {k: v[0] for k, v in tree_files(upstream).items()}


def test_empty_upstream_is_refused_even_with_a_high_limit(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    generate_tree(upstream, TreeSpec(files=5, total_bytes=500))
    assert sync(rsync_daemon(upstream), endpoint)[0] == 0
    published = mirror_files(s3)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = sync(rsync_daemon(empty), endpoint, "--max-delete-percent", "100")
    assert code == 4 and "listing is empty" in stderr
    assert mirror_files(s3) == published


def test_second_sync_exits_3_while_a_lease_is_live_and_takes_over_an_expired_one(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    generate_tree(upstream, TreeSpec(files=5, total_bytes=500))
    daemon = rsync_daemon(upstream)
    lease = {"owner": "other", "host": "elsewhere", "acquired_at": time.time(), "expires_at": time.time() + 600}
    s3.put_object(Bucket=BUCKET, Key="state/lock.json", Body=json.dumps(lease).encode())
    code, _, stderr = sync(daemon, endpoint)
    assert code == 3 and "holds the lock" in stderr
    assert mirror_files(s3) == {}
    # A holder that died: its lease (time to live 1 s) is expired once S3's clock, in whole seconds, has
    # moved more than its ttl and a second of grace past when it was written.
    s3.put_object(Bucket=BUCKET, Key="state/lock.json", Body=json.dumps({**lease, "ttl": 1}).encode())
    time.sleep(3.5)
    code, _, stderr = sync(daemon, endpoint)
    assert code == 0, stderr
    assert "took over an expired sync lock" in stderr
    assert "state/lock.json" not in etags(s3, "state/")  # released at the end


def test_dry_run_prints_the_plan_and_touches_nothing(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    generate_tree(upstream, TreeSpec(files=5, total_bytes=500))
    write_file(upstream / "odd\tname", b"x", 1_700_000_000)
    result = run_cli(["sync", "--upstream", rsync_daemon(upstream).url, "--bucket", BUCKET, "--dry-run"], endpoint)
    assert result.returncode == 0, result.stderr
    assert "upload  odd\\#011name" in result.stdout
    assert "plan: upload_files=6" in result.stdout
    assert etags(s3, "") == {}


def test_unreachable_upstream_exits_1_with_a_sentence_and_writes_nothing_served(s3: Any, endpoint: str) -> None:
    from mirrorkeeper_dev.rsyncd import free_port

    code, _, stderr = sync(f"rsync://127.0.0.1:{free_port()}/mirror/", endpoint)
    assert code == 1
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("mirrorkeeper sync: error: cannot list") and "retry" in last_line
    assert etags(s3, "pub/") == {}
    assert json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read())["result"] == "failed"


def test_unknown_module_and_missing_bucket_are_clear(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    daemon = rsync_daemon(upstream)
    code, _, stderr = sync(daemon.url.replace("/mirror/", "/nosuch/"), endpoint)
    assert code == 1 and "unknown module or access denied" in stderr
    result = run_cli(["sync", "--upstream", daemon.url, "--bucket", "no-such-bucket"], endpoint)
    assert result.returncode == 1 and "bucket 'no-such-bucket' is not usable" in result.stderr


def test_usage_errors_exit_2_with_one_line(endpoint: str) -> None:
    result = run_cli(["sync", "--upstream", "http://x/y/", "--bucket", BUCKET], endpoint)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "rsync:// URL" in result.stderr


def in_process_run(daemon: RsyncDaemon, endpoint: str, staging: Path, rsync: RsyncClient | None = None) -> SyncRun:
    """A SyncRun in this process (so a test can swap its rsync client), against the moto server."""
    aws = AwsConfig(endpoint_url=endpoint, region="us-east-1")
    config = SyncConfig(upstream=daemon.url, layout=MirrorLayout.create(BUCKET), aws=aws, staging_dir=staging)
    counter = RequestCounter()
    return SyncRun(config, s3_client(aws, counter), counter, rsync=rsync)


def test_unchanged_listing_skips_the_manifest_and_the_report_counts_every_request(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN a published mirror
    generate_tree(upstream, TreeSpec(files=30, total_bytes=3_000))
    daemon = rsync_daemon(upstream)
    code, first, _ = sync(daemon, endpoint)
    assert code == 0
    # WHEN upstream lists the very same bytes again (requests counted by a proxy in front of S3)
    with fault_proxy(endpoint, lambda method, path, number: None) as proxy:
        code, summary, stderr = sync(daemon, str(proxy["url"]))
    # THEN the run neither reads the manifest nor plans, and says since which run nothing changed
    assert code == 0, stderr
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read())
    assert report["result"] == "no-change" and report["unchanged_since"] == first["run_id"]
    assert "GetObject" not in report["s3_requests_by_operation"]
    published = json.loads(s3.get_object(Bucket=BUCKET, Key=f"state/runs/{first['run_id']}.json")["Body"].read())
    assert (report["mirror_entries"], report["mirror_bytes"]) == (
        published["mirror_entries"],
        published["mirror_bytes"],
    )
    # AND its request count includes the lock release that follows the report
    assert summary["s3_requests"] == proxy["requests"]
    # AND any change upstream (here one mtime) means the long way again
    first_file = sorted(tree_files(upstream))[0]
    os.utime(upstream / first_file, (1_800_000_000, 1_800_000_000))
    code, summary, _ = sync(daemon, endpoint)
    assert code == 0 and summary["uploaded_files"] == 1


@dataclass(frozen=True)
class VanishingRsync(RsyncClient):
    """Fetches like rsync, then loses one file, as if upstream deleted it between listing and fetch."""

    victim: str = ""

    def fetch(self, url: str, paths: Iterable[str], dest: Path) -> int:
        code = super().fetch(url, paths, dest)
        (dest / self.victim).unlink(missing_ok=True)
        return code


def test_a_run_that_could_not_publish_what_was_listed_makes_the_next_run_compare(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a first sync during which one file vanished
    paths = generate_tree(upstream, TreeSpec(files=12, total_bytes=1_200))
    daemon = rsync_daemon(upstream)
    report = in_process_run(daemon, endpoint, tmp_path, VanishingRsync(victim=paths[5])).run()
    assert report.vanished == [paths[5]] and report.uploaded_files == 11
    # THEN its manifest carries no listing key, so the next run (same listing) compares and fetches it
    code, summary, _ = sync(daemon, endpoint)
    assert code == 0 and summary["result"] == "success" and summary["uploaded_files"] == 1
    assert mirror_files(s3) == {k: v[0] for k, v in tree_files(upstream).items()}
    code, summary, _ = sync(daemon, endpoint)
    assert summary["result"] == "no-change"


@dataclass(frozen=True)
class CountingRsync(RsyncClient):
    batches: list[int] = field(default_factory=list)  # files per fetch

    def fetch(self, url: str, paths: Iterable[str], dest: Path) -> int:
        batch = list(paths)
        self.batches.append(len(batch))
        return super().fetch(url, batch, dest)


def test_small_files_are_fetched_in_batches_capped_by_count(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str, tmp_path: Path
) -> None:
    generate_tree(upstream, TreeSpec(files=25, total_bytes=2_500))
    rsync = CountingRsync()
    run = in_process_run(rsync_daemon(upstream), endpoint, tmp_path, rsync)
    run.batch_files = 10
    report = run.run()
    assert report.uploaded_files == 25
    assert rsync.batches == [10, 10, 5]


def test_listing_digest_tells_a_changed_tree_from_an_unchanged_one(upstream: Path, rsync_daemon: DaemonFactory) -> None:
    write_file(upstream / "a", b"a", 1_700_000_000)
    daemon = rsync_daemon(upstream)
    client = RsyncClient()

    def digest(url: str) -> str | None:
        with client.start_list(url) as listing:
            return listing.digest

    first = digest(daemon.url)
    assert first is not None and digest(daemon.url) == first
    write_file(upstream / "a", b"b", 1_700_000_001)
    assert digest(daemon.url) not in (first, None)
    assert digest(daemon.url.replace("/mirror/", "/nosuch/")) is None  # a failed listing has none


def test_the_daemon_removes_its_config_and_log_when_stopped(upstream: Path) -> None:
    daemon = RsyncDaemon(upstream).start()
    workdir = daemon._dir
    assert workdir is not None and (workdir / "rsyncd.conf").exists()
    daemon.stop()
    assert not workdir.exists()


def test_large_files_go_up_in_parts_and_file_links_are_copied_server_side(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN files above the in-memory size (8 MiB) and above a 5 MiB multipart threshold, and a link to one
    big = os.urandom(13 * 1024 * 1024)
    medium = os.urandom(9 * 1024 * 1024)
    write_file(upstream / "iso/big.iso", big, 1_700_000_000)
    write_file(upstream / "iso/medium.img", medium, 1_700_000_100)
    os.symlink("big.iso", upstream / "iso/latest.iso")
    daemon = rsync_daemon(upstream)
    # WHEN they are synced
    code, summary, stderr = sync(daemon, endpoint, "--multipart-threshold", "10M")
    assert code == 0 and summary["uploaded_files"] == 2, stderr
    # THEN the bytes are upstream's, the big one in parts, and the link a copy of its target
    head = s3.head_object(Bucket=BUCKET, Key="pub/iso/big.iso")
    assert "-" in head["ETag"]  # a multipart upload's ETag counts its parts
    assert s3.get_object(Bucket=BUCKET, Key="pub/iso/big.iso")["Body"].read() == big
    assert s3.get_object(Bucket=BUCKET, Key="pub/iso/medium.img")["Body"].read() == medium
    assert s3.get_object(Bucket=BUCKET, Key="pub/iso/latest.iso")["Body"].read() == big
    assert head["Metadata"]["mtime"] == "1700000000"
    # AND the manifest records the SHA-256 of each, for the probes
    with gzip.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key="state/manifest.jsonl.gz")["Body"].read())) as gz:
        rows = {row[0]: row for row in map(json.loads, list(gz)[1:])}
    assert rows["iso/big.iso"][5] == hashlib.sha256(big).hexdigest()
    assert rows["iso/medium.img"][5] == hashlib.sha256(medium).hexdigest()
