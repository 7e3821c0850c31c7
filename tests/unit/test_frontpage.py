"""The host's front page and ``/.mirrorkeeper/mirrors.json`` (verify/frontpage.py): what a browser
parses from hostile values, which mirrors are linked, the pages above nested paths, and the state
each mirror shows, read from its objects as publish-host reads them (moto's S3 in-process: no
network)."""

import json
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mirrorkeeper.config import AwsConfig, VerifyConfig
from mirrorkeeper.host import MirrorEntry, MirrorSummary, Schedule, summarise_all
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.state import LeaseDoc, ManifestMeta, RunReport, StateStore, SyncResult
from mirrorkeeper.verify.alerts import LogNotifier
from mirrorkeeper.verify.frontpage import directory_pages, render_front_page, render_mirrors_json
from mirrorkeeper.verify.workflow import Deps, cli_trigger, publish_host

NOW = 1_780_000_000.0
BUCKET = "frontpage-test"
HOSTILE_HOST = "<b>mirrors</b> & \"Co\" 'quoted'"
HOSTILE_UPSTREAM = "rsync://up.example.org/x\"'><script>document.title='pwned'</script>/"
TUNASYNC_FIELDS = {
    "name",
    "is_master",
    "status",
    "last_update",
    "last_update_ts",
    "last_ended",
    "last_ended_ts",
    "upstream",
    "size",
    "next_schedule_ts",
}


class Page(HTMLParser):
    """What an HTML parser makes of a page: each element with its attributes, and each element's text."""

    def __init__(self, markup: bytes) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: dict[str, list[str]] = {}
        self._open: list[str] = []
        self.feed(markup.decode())
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in ("meta", "br"):
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self._open:
            self.text.setdefault(self._open[-1], []).append(data)

    def tags(self, name: str) -> list[dict[str, str]]:
        return [attrs for tag, attrs in self.elements if tag == name]

    def links(self) -> set[str]:
        return {attrs["href"] for attrs in self.tags("a")}

    def entries(self) -> list[dict[str, Any]]:
        """The directory entries the page carries for the FTP front end."""
        data = "".join(self.text.get("script", []))
        return list(json.loads(data))


def summary(name: str, path: str = "", **fields: Any) -> MirrorSummary:
    synced = {
        "upstream": f"rsync://up.example.org/{name}/",
        "last_update": NOW - 600,
        "last_ended": NOW - 600,
        "result": "success",
        "size": 1 << 20,
    }
    return MirrorSummary(name, path or name, **(synced | fields))


def test_hostile_host_names_and_upstreams_are_text_never_markup() -> None:
    # GIVEN a host name with markup and an upstream URL that closes an attribute and opens a script
    mirror = summary("openvz", upstream=HOSTILE_UPSTREAM, health={"http": "ok", "ftp": "down", "overall": "down"})
    # WHEN the front page is rendered and parsed
    page = Page(render_front_page(HOSTILE_HOST, [mirror], NOW))
    # THEN they came out as the very text they were, and no element came from them
    assert "".join(page.text["title"]) == f"{HOSTILE_HOST}: mirrors"
    assert "".join(page.text["h1"]) == HOSTILE_HOST
    assert HOSTILE_UPSTREAM in page.text["td"]
    assert page.tags("b") == []
    # AND the page's one script is JSON data, which browsers never run
    assert page.tags("script") == [{"type": "application/json", "id": "mirrorkeeper-entries"}]
    # AND its own policy forbids scripts and every other resource
    policy = next(m["content"] for m in page.tags("meta") if m.get("http-equiv") == "Content-Security-Policy")
    assert policy.startswith("default-src 'none';") and "script-src" not in policy


def test_a_mirror_that_never_published_is_listed_but_not_linked() -> None:
    mirrors = [summary("openvz", health={"http": "ok"}), summary("gone", last_update=None, result="failed")]
    page = Page(render_front_page("mirrors.test", mirrors, NOW))
    assert [row["data-mirror"] for row in page.tags("tr") if "data-mirror" in row] == ["gone", "openvz"]
    # Its tree does not exist (and it has no status page before its first verify): nothing to link.
    assert page.links() == {".mirrorkeeper/mirrors.json", "/openvz/", "/openvz/.mirrorkeeper/status.html"}
    assert "never" in page.text["span"]
    # An FTP listing of / shows only directories that are there.
    assert [entry["name"] for entry in page.entries()] == ["openvz"]


def test_nested_paths_get_a_page_for_each_directory_above_them() -> None:
    mirrors = [
        summary("debian", "linux/debian", last_update=NOW - 300),
        summary("ubuntu", "linux/ubuntu", last_update=NOW - 900),
        summary("fedora", "linux/fedora", last_update=None),  # never published: not listed below linux/
        summary("centos", "vault/el/centos"),
        summary("openvz"),
    ]
    pages = {directory: Page(page) for directory, page in directory_pages("mirrors.test", mirrors, NOW).items()}
    assert pages.keys() == {"linux", "vault", "vault/el"}
    assert pages["linux"].links() == {"/", "/linux/debian/", "/linux/ubuntu/"}
    assert pages["vault"].links() == {"/", "/vault/el/"} and pages["vault/el"].links() == {"/", "/vault/el/centos/"}
    # Each page's directory entries carry the newest sync below them, for FTP's listing times.
    assert pages["linux"].entries() == [
        {"name": "debian", "type": "d", "mtime": int(NOW - 300)},
        {"name": "ubuntu", "type": "d", "mtime": int(NOW - 900)},
    ]
    front = Page(render_front_page("mirrors.test", mirrors, NOW))
    assert {entry["name"]: entry["mtime"] for entry in front.entries()} == {
        "linux": int(NOW - 300),
        "openvz": int(NOW - 600),
        "vault": int(NOW - 600),
    }
    assert "/linux/debian/" in front.links() and "/linux/fedora/" not in front.links()


# -- every state a mirror can be in, from its objects in the bucket --------------------------------


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def entry(name: str, path: str = "", enabled: bool = True, paused: bool = False) -> MirrorEntry:
    layout = MirrorLayout.create(BUCKET, path=path or name)
    return MirrorEntry(
        name, layout, f"rsync://up.example.org/{name}/", ".mirrorkeeper/trace", Schedule(3600, 7), enabled, paused
    )


def synced(client: Any, mirror: MirrorEntry, result: SyncResult, exit_code: int) -> StateStore:
    """The objects a sync that ended with ``result`` leaves: its report and, when it published, the
    trace and the manifest (with its totals)."""
    store = StateStore(client, mirror.layout)
    store.write_run_report(RunReport(f"run-{mirror.name}", mirror.upstream, NOW - 700, NOW - 600, result, exit_code))
    if exit_code == 0:
        store.publish(mirror.trace_path, b"trace\n", "text/plain")
        meta = ManifestMeta(entries=3, bytes=3 << 20, skipped=0).to_metadata()
        client.put_object(Bucket=BUCKET, Key=store.manifest_key, Body=b"", Metadata=meta)
    return store


def test_each_state_has_its_tunasync_status_in_mirrors_json(s3: Any) -> None:
    # GIVEN a mirror for each state: synced; whose sync failed; whose sync holds the lease now;
    # paused; disabled (the last two synced once, before)
    mirrors = [
        entry("debian", "linux/debian"),
        entry("broken"),
        entry("busy"),
        entry("held", paused=True),
        entry("off", enabled=False),
    ]
    for mirror in mirrors:
        failed = mirror.name == "broken"
        synced(s3, mirror, SyncResult.FAILED if failed else SyncResult.SUCCESS, 1 if failed else 0)
    lease = LeaseDoc("sync-task", "test", NOW, NOW + 3600, 3600)
    assert StateStore(s3, mirrors[2].layout).write_lease(lease) is not None
    # WHEN the host's state is read, as publish-host reads it
    listed = {m["name"]: m for m in json.loads(render_mirrors_json(summarise_all(s3, mirrors, NOW)))}
    # THEN each mirror carries tunasync's web-status fields and its status in tunasync's words
    assert {name: m["status"] for name, m in listed.items()} == {
        "debian": "success",
        "broken": "failed",
        "busy": "syncing",
        "held": "paused",
        "off": "disabled",
    }
    assert all(m.keys() >= TUNASYNC_FIELDS and m["is_master"] is True for m in listed.values())
    debian = listed["debian"]
    assert debian["last_update_ts"] > 0 and debian["last_ended_ts"] == int(NOW - 600)
    assert debian["last_update"].endswith(" +0000") and debian["size"] == "3.0M"
    assert debian["upstream"] == "rsync://up.example.org/debian/" and debian["path"] == "linux/debian"
    assert debian["next_schedule_ts"] == 1_780_002_420  # the next hour's minute 7 after NOW
    # A failed sync never published: nothing to date; the paused and disabled run on no schedule.
    assert listed["broken"]["last_update_ts"] == 0 and listed["broken"]["size"] == "unknown"
    assert listed["held"]["next_schedule_ts"] == listed["off"]["next_schedule_ts"] == 0


def test_publish_host_writes_the_front_page_a_page_above_nested_paths_and_mirrors_json(s3: Any) -> None:
    mirrors = [entry("debian", "linux/debian"), entry("openvz")]
    for mirror in mirrors:
        synced(s3, mirror, SyncResult.SUCCESS, 0)
    aws = AwsConfig(endpoint_url="", region="us-east-1")
    config = VerifyConfig(MirrorLayout.create(BUCKET), aws, http_url="http://127.0.0.1:1/", host_name="m.test")
    deps = Deps(config, s3, metrics=_Discard(), notifier=LogNotifier(), clock=lambda: NOW, mirrors=mirrors)
    trigger = cli_trigger(NOW)
    # What publish-health hands on for a mirror whose checks measured nothing (the metrics are not tested here).
    figures: dict[str, Any] = {key: {} for key in ("levels", "freshness", "passed", "failed", "latency", "missing")}
    figures |= dict.fromkeys(("completion", "drift", "lag", "sync_failed", "sync"), None) | {"overall": 0}
    results = [{"mirror": m.name, "health": {"overall": "ok", "figures": figures}} for m in mirrors]
    assert publish_host({"trigger": trigger, "results": results}, deps)["not_ok"] == []
    served = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="pub/")["Contents"]}
    assert {"pub/", "pub/linux/", "pub/.mirrorkeeper/mirrors.json"} <= served
    assert "pub/openvz/" not in served  # a mirror's own directory page is its sync's, never the host's
    linux = Page(s3.get_object(Bucket=BUCKET, Key="pub/linux/")["Body"].read())
    assert linux.links() == {"/", "/linux/debian/"}


class _Discard:
    def emit(self, points: list[Any]) -> None:
        pass
