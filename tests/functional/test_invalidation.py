"""No stale copies at the edge: `mirrorkeeper sync` against moto's CloudFront API (the batches it
recorded, in the order the sync sent them), serve-http as a real process with a long cache TTL, and
`mirrorkeeper verify` against an edge that keeps what it was told to drop."""

import json
import os
import time
from pathlib import Path
from typing import Any

import boto3

from mirrorkeeper_dev.rsyncd import RsyncDaemon
from mirrorkeeper_dev.sampletree import write_file
from tests.faultproxy import fault_proxy
from tests.functional.test_http_frontend import request, url
from tests.functional.test_sync import DaemonFactory, mirror_files, sync
from tests.support import BUCKET, run_cli, serve_cli, tree_files

OLD, NEW = 1_700_000_000, 1_700_000_100
CLOUDFRONT_API = "/2020-05-31/distribution/"


def distribution(endpoint: str) -> tuple[Any, str]:
    """A distribution on the moto server, as the stack makes one (origin path /pub); its client and id."""
    cloudfront = boto3.client("cloudfront", endpoint_url=endpoint, region_name="us-east-1")
    # moto refuses an S3 origin whose domain does not name a bucket
    origin = {"Id": "mirror", "DomainName": f"{BUCKET}.s3.amazonaws.com", "OriginPath": "/pub"}
    created = cloudfront.create_distribution(
        DistributionConfig={
            "CallerReference": "mirrorkeeper-test",
            "Comment": "",
            "Enabled": True,
            "Origins": {"Quantity": 1, "Items": [{**origin, "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
            "DefaultCacheBehavior": {"TargetOriginId": "mirror", "ViewerProtocolPolicy": "allow-all", "MinTTL": 0},
        }
    )
    return cloudfront, created["Distribution"]["Id"]


def recorded(cloudfront: Any, distribution_id: str) -> list[dict[str, Any]]:
    """Every invalidation the distribution holds, oldest first, read back one by one."""
    listed = cloudfront.list_invalidations(DistributionId=distribution_id)["InvalidationList"].get("Items", [])
    found = [cloudfront.get_invalidation(DistributionId=distribution_id, Id=i["Id"])["Invalidation"] for i in listed]
    return sorted(found, key=lambda invalidation: invalidation["CreateTime"])


def published_as_upstream(s3: Any, upstream: Path) -> bool:
    served = mirror_files(s3)
    return served.pop("latest") == (upstream / "latest").read_bytes() and served == {
        k: v[0] for k, v in tree_files(upstream).items()
    }


def last_report(s3: Any) -> dict[str, Any]:
    return dict(json.loads(s3.get_object(Bucket=BUCKET, Key="state/runs/last.json")["Body"].read()))


def repository(upstream: Path) -> None:
    """A yum repository whose metadata keeps its names, with checksums, a README and a link beside it."""
    write_file(upstream / "repo/repodata/repomd.xml", b"<repomd>1</repomd>", OLD)
    write_file(upstream / "repo/repodata/primary.xml.gz", b"primary 1", OLD)
    write_file(upstream / "repo/repodata/filelists.xml.gz", b"filelists", OLD)
    write_file(upstream / "repo/SHA256SUMS", b"sums 1", OLD)
    write_file(upstream / "repo/README", b"read me 1", OLD)
    write_file(upstream / "repo/a b+c%ü.rpm", b"odd name 1", OLD)
    write_file(upstream / "repo/x*y.iso", b"star 1", OLD)
    for number in range(7):
        write_file(upstream / f"pool/p{number}.rpm", b"package 1", OLD)
    write_file(upstream / "old.txt", b"old", OLD)
    os.symlink("repo/README", upstream / "latest")


def published_repository(upstream: Path, rsync_daemon: DaemonFactory, endpoint: str) -> tuple[Any, str, RsyncDaemon]:
    """A distribution, and the repository published by a first sync naming it; its client, id and upstream."""
    cloudfront, distribution_id = distribution(endpoint)
    repository(upstream)
    daemon = rsync_daemon(upstream)
    assert sync(daemon, endpoint, "--cloudfront-distribution-id", distribution_id)[0] == 0
    return cloudfront, distribution_id, daemon


def update_in_place(upstream: Path) -> None:
    """What a repository update does: fixed names rewritten, a file gone, a file new."""
    for name in ("repodata/repomd.xml", "repodata/primary.xml.gz", "SHA256SUMS", "README", "a b+c%ü.rpm", "x*y.iso"):
        write_file(upstream / "repo" / name, b"changed " + name.encode(), NEW)
    for number in range(6):
        write_file(upstream / f"pool/p{number}.rpm", b"package 2", NEW)
    write_file(upstream / "pool/p7.rpm", b"new package", NEW)
    (upstream / "old.txt").unlink()
    write_file(upstream / "new.txt", b"new", NEW)


def test_a_sync_invalidates_what_it_replaced_data_before_the_index_tiers_and_the_rest_after_deleting(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN a mirror published by a first sync, which replaced nothing and so invalidated nothing
    cloudfront, distribution_id, daemon = published_repository(upstream, rsync_daemon, endpoint)
    given = ("--cloudfront-distribution-id", distribution_id)
    assert recorded(cloudfront, distribution_id) == [] and last_report(s3)["invalidation"] == {}
    # WHEN upstream rewrites files in place, deletes one and adds others, and the next sync runs
    # (every request it sends, to S3 and to CloudFront, noted in order by a proxy)
    update_in_place(upstream)
    sent: list[tuple[str, str]] = []
    with fault_proxy(endpoint, lambda method, path, number: sent.append((method, path))) as proxy:
        code, summary, stderr = sync(daemon, str(proxy["url"]), *given)
    assert code == 0, stderr
    assert published_as_upstream(s3, upstream)
    # THEN CloudFront holds two batches: the data files replaced (a directory of six as one wildcard,
    # names percent-encoded as the CloudFront Function sends them to the origin, a '*' name covered by
    # a wildcard), then the index files, the link, the deleted file and the changed directory pages
    data, final = recorded(cloudfront, distribution_id)
    assert sorted(data["InvalidationBatch"]["Paths"]["Items"]) == [
        "/pool/*",
        "/repo/README",
        "/repo/a%20b%2Bc%25%C3%BC.rpm",
        "/repo/repodata/primary.xml.gz",
        "/repo/x*",
    ]
    assert sorted(final["InvalidationBatch"]["Paths"]["Items"]) == [
        "/",
        "/latest",
        "/old.txt",
        "/pool/",
        "/repo/",
        "/repo/SHA256SUMS",
        "/repo/repodata/",
        "/repo/repodata/repomd.xml",
    ]
    run_id = summary["run_id"]
    assert [i["InvalidationBatch"]["CallerReference"] for i in (data, final)] == [
        f"mirrorkeeper-{run_id}-data",
        f"mirrorkeeper-{run_id}-final",
    ]
    # AND the data batch went out after the last data upload and before the first index file; the
    # rest after the deletions and before the manifest
    posts = [n for n, (method, path) in enumerate(sent) if method == "POST" and path.startswith(CLOUDFRONT_API)]
    assert len(posts) == 2

    def first(ending: str, method: str = "PUT") -> int:
        return next(n for n, (m, path) in enumerate(sent) if m == method and path.split("?")[0].endswith(ending))

    assert first("/pub/repo/repodata/primary.xml.gz") < posts[0] < first("/pub/repo/repodata/repomd.xml")
    assert posts[0] < first("/pub/repo/SHA256SUMS") < first(f"/{BUCKET}", "POST") < posts[1]
    assert posts[1] < first("/state/manifest.jsonl.gz")
    # AND the run report names the batches CloudFront recorded, with their counts
    section = last_report(s3)["invalidation"]
    assert section["distribution"] == distribution_id
    assert [(b["phase"], b["id"], b["status"]) for b in section["batches"]] == [
        ("data", data["Id"], "completed"),
        ("final", final["Id"], "completed"),
    ]
    assert (section["paths"], section["wildcards"], section["completed"], section["not_invalidated"]) == (
        13,
        2,
        True,
        0,
    )
    assert [b["path_count"] for b in section["batches"]] == [5, 8]
    # AND a run with nothing to do asks CloudFront nothing and costs no extra S3 request
    sent.clear()
    with fault_proxy(endpoint, lambda method, path, number: sent.append((method, path))) as proxy:
        code, summary, _ = sync(daemon, str(proxy["url"]), *given)
    assert summary["result"] == "no-change" and summary["s3_requests"] <= 8
    assert not [path for _, path in sent if path.startswith(CLOUDFRONT_API)]
    assert len(recorded(cloudfront, distribution_id)) == 2


def test_throttling_never_fails_the_run_and_what_was_not_invalidated_is_reported(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN a published mirror, and CloudFront refusing every invalidation as too many in progress
    cloudfront, distribution_id, daemon = published_repository(upstream, rsync_daemon, endpoint)
    update_in_place(upstream)

    def too_many(method: str, path: str, number: int) -> tuple[int, str] | None:
        return (400, "TooManyInvalidationsInProgress") if method == "POST" and path.startswith(CLOUDFRONT_API) else None

    # WHEN the sync runs, not allowed to wait
    with fault_proxy(endpoint, too_many) as proxy:
        code, summary, stderr = sync(
            daemon, str(proxy["url"]), "--cloudfront-distribution-id", distribution_id, "--invalidation-wait", "0"
        )
    # THEN everything is published, the run succeeds, and the report and a warning say what CloudFront kept
    assert code == 0 and summary["result"] == "success", stderr
    assert published_as_upstream(s3, upstream)
    section = last_report(s3)["invalidation"]
    assert [b["status"] for b in section["batches"]] == ["throttled", "throttled"]
    assert section["not_invalidated"] == section["paths"] == 13 and not section["completed"]
    assert "CloudFront did not take 5 invalidation paths" in stderr and '"level": "WARNING"' in stderr
    assert recorded(cloudfront, distribution_id) == []


def test_serve_http_serves_a_file_replaced_in_place_new_right_after_the_sync(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN a published mirror served by serve-http with an hour's cache, once following the sync
    # (looking every 2 s at most) and once told never to look
    _, _, daemon = published_repository(upstream, rsync_daemon, endpoint)
    ttl = ("--cache-ttl", "3600")
    with (
        serve_cli("serve-http", endpoint, *ttl, "--invalidation-poll", "2") as following,
        serve_cli("serve-http", endpoint, *ttl, "--invalidation-poll", "0") as ignoring,
    ):
        for port in (following, ignoring):
            assert request(port, url("repo/README"))[2] == b"read me 1"
            assert request(port, url("old.txt"))[0] == 200
            assert b"new.txt" not in request(port, "/")[2]
        looked = time.monotonic()
        # WHEN upstream rewrites README in place and deletes old.txt, and a sync publishes that
        # (naming no distribution: serve-http follows the sync's record all the same)
        update_in_place(upstream)
        assert sync(daemon, endpoint)[0] == 0
        time.sleep(max(0.0, looked + 2.5 - time.monotonic()))  # the following server's next look is due
        # THEN the following server serves the new README, 404 for old.txt, the new root page
        assert request(following, url("repo/README"))[2] == b"changed README"
        assert request(following, url("old.txt"))[0] == 404
        assert b"new.txt" in request(following, "/")[2]
        # AND without following, the hour's TTL would still serve the replaced and the deleted file
        assert request(ignoring, url("repo/README"))[2] == b"read me 1"
        assert request(ignoring, url("old.txt"))[0] == 200


def verify(endpoint: str, port: int) -> tuple[int, list[dict[str, Any]]]:
    """`mirrorkeeper verify` of the HTTP front end at ``port``, sampling the newest files: exit code, findings."""
    result = run_cli(
        [
            "verify",
            "--bucket",
            BUCKET,
            "--http-url",
            f"http://127.0.0.1:{port}/",
            "--sample-random",
            "0",
            "--sample-late",
            "0",
            "--sample-download",
            "0",
            "--metrics",
            "none",
            "--json",
        ],
        endpoint,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)["health"]["findings"]


def test_verify_fails_a_copy_the_edge_kept_after_its_invalidation_completed_and_forgives_one_not_invalidated(
    upstream: Path, rsync_daemon: DaemonFactory, s3: Any, endpoint: str
) -> None:
    # GIVEN an edge that keeps what it is told to drop (serve-http with an hour's cache, never
    # looking at the sync's record) holding a copy of pool/a.rpm
    _, distribution_id = distribution(endpoint)
    write_file(upstream / "pool/a.rpm", b"package 1", OLD)
    daemon: RsyncDaemon = rsync_daemon(upstream)
    given = ("--cloudfront-distribution-id", distribution_id)
    assert sync(daemon, endpoint, *given)[0] == 0
    with serve_cli("serve-http", endpoint, "--cache-ttl", "3600", "--invalidation-poll", "0") as edge:
        assert request(edge, url("pool/a.rpm"))[2] == b"package 1"
        # WHEN a.rpm is replaced in place and the sync's invalidation of it completes
        write_file(upstream / "pool/a.rpm", b"package 2", NEW)
        assert sync(daemon, endpoint, *given)[0] == 0
        assert last_report(s3)["invalidation"]["completed"]
        # THEN verify finds the old copy and fails it at once, though the sync was seconds ago
        code, findings = verify(endpoint, edge)
        assert code == 1
        (finding,) = [f for f in findings if f["component"] == "http"]
        assert finding["level"] == "degraded"
        assert "invalidation of them had completed before the probe (first: pool/a.rpm" in finding["reason"]
        # WHEN a sync replaces it again without invalidating (no distribution configured)
        write_file(upstream / "pool/a.rpm", b"package 3", NEW + 100)
        assert sync(daemon, endpoint)[0] == 0
        # THEN the same old copy is a cache not yet expired, forgiven within the grace
        code, findings = verify(endpoint, edge)
        assert code == 0, findings
        assert [f["level"] for f in findings if f["component"] == "http"] == ["ok"]
