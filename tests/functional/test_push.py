"""Push-triggered syncs with real processes: ``mirrorkeeper serve-push`` over a host of two mirrors (a real
rsync daemon upstream, the moto server as S3) starts ``mirrorkeeper sync`` as its own process when a signed
push arrives; ``mirrorkeeper push`` sends them. Every refusal has its status, its logged reason and no sync."""

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper.push.signature import MAX_BODY, sign
from mirrorkeeper_dev.rsyncd import RsyncDaemon, free_port
from mirrorkeeper_dev.sampletree import openvz_like, write_file
from mirrorkeeper_dev.services import wait_for_port
from tests.support import BUCKET, cli_env, run_cli

SECRETS = {"openvz": "openvz-push-secret-7f3a", "debian": "debian-push-secret-91c2"}


@dataclass
class PushHost:
    url: str
    secret_files: dict[str, Path]
    config: Path
    log: Path  # serve-push's own log (JSON lines)
    sync_log: Path  # the output of the syncs it started
    upstreams: dict[str, Path]

    def push(
        self, mirror: str = "openvz", secret_of: str | None = None, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        secret = self.secret_files[secret_of or mirror]
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mirrorkeeper",
                "push",
                "--url",
                self.url,
                "--mirror",
                mirror,
                "--secret-file",
                str(secret),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def curl(
        self,
        path: str,
        body: bytes = b"{}",
        secret: str | None = SECRETS["openvz"],
        timestamp: int | None = None,
        *options: str,
        stamped: bool = True,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A request as curl sends it (a body over 1 KiB announced with Expect: 100-continue), signed as the
        contract says (without the timestamp header unless ``stamped``), with curl's ``options``: the
        status, the JSON answer and the headers of the final response."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signed = ["-H", f"X-Mirrorkeeper-Timestamp: {stamp}"] if stamped else []
        if secret is not None:
            signed += ["-H", f"X-Mirrorkeeper-Signature: {sign(secret.encode(), stamp, body)}"]
        request = ["-X", "POST", "--data-binary", "@-", *signed, *options, self.url.rstrip("/") + path]
        result = subprocess.run(
            ["curl", "-sS", "-i", "--max-time", "30", *request],
            input=body,
            capture_output=True,
            timeout=60,
            check=True,
        )
        # -i prints every response, a 100 Continue included: the last one is the answer
        *_, head, text = result.stdout.split(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        return int(status_line.split()[1]), json.loads(text), headers

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


def runs(s3: Any, mirror: str) -> list[str]:
    """The run reports of ``mirror`` (by id, last.json left out)."""
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"state/{mirror}/runs/").get("Contents", [])
    return sorted(item["Key"] for item in listed if not item["Key"].endswith("/last.json"))


def wait_until(what: str, ready: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def exists(s3: Any, key: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount"))


def settled(s3: Any, mirror: str, reports: int) -> Callable[[], bool]:
    """Whether ``mirror`` has ``reports`` run reports and no sync holds or is about to take its lease."""

    def check() -> bool:
        if len(runs(s3, mirror)) < reports or exists(s3, f"state/{mirror}/lock.json"):
            return False
        state = json.loads(s3.get_object(Bucket=BUCKET, Key=f"state/{mirror}/push.json")["Body"].read())
        return bool(state["starting_at"] is None and state["waiting"] == 0)

    return check


@pytest.fixture
def push_host(tmp_path: Path, s3: Any, endpoint: str) -> Iterator[Callable[..., PushHost]]:
    """Factory: a host of two mirrors (openvz, debian) on one rsync daemon, and serve-push over it."""
    started: list[tuple[subprocess.Popen[bytes], RsyncDaemon]] = []

    def start(openvz_extra: str = "", debian_extra: str = "") -> PushHost:
        openvz, debian = tmp_path / "openvz", tmp_path / "debian"
        openvz_like(openvz)
        write_file(debian / "dists/stable/Release", b"Suite: stable\n", 1_700_000_000)
        daemon = RsyncDaemon(openvz, module="openvz", more={"debian": debian}).start()
        secret_files = {}
        for name, secret in SECRETS.items():
            secret_files[name] = tmp_path / f"{name}.push"
            secret_files[name].write_text(secret + "\n")
        config = tmp_path / "mirrors.toml"
        config.write_text(
            f"""[host]
name = "mirrors.test"
bucket = "{BUCKET}"

[mirrors.openvz]
upstream = "{daemon.url_of("openvz")}"
push_secret_file = "{secret_files["openvz"]}"
{openvz_extra}

[mirrors.debian]
upstream = "{daemon.url_of("debian")}"
push_secret_file = "{secret_files["debian"]}"
{debian_extra}
"""
        )
        port = free_port()
        log, sync_log = tmp_path / "serve-push.log", tmp_path / "syncs.log"
        args = ["serve-push", "--config", str(config), "--port", str(port), "--log-format", "json"]
        with open(log, "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "mirrorkeeper", *args, "--sync-log", str(sync_log)],
                env=cli_env(endpoint),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        started.append((process, daemon))
        with open(log, "rb") as stderr_log:
            wait_for_port(port, process, 20, "serve-push", stderr_log)
        return PushHost(
            f"http://127.0.0.1:{port}/", secret_files, config, log, sync_log, {"openvz": openvz, "debian": debian}
        )

    yield start
    for process, daemon in started:
        process.terminate()
        process.wait(10)
        daemon.stop()


def test_a_valid_push_starts_a_sync_that_publishes(push_host: Callable[..., PushHost], s3: Any) -> None:
    host = push_host()
    # WHEN the upstream pushes, as an upstream would
    result = host.push("openvz")
    # THEN the endpoint answers 202 started, and `mirrorkeeper push` says so and exits 0
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "202 started: openvz's sync started"
    # AND a real sync of that mirror alone runs and publishes
    wait_until("the sync to publish", settled(s3, "openvz", 1))
    assert exists(s3, "pub/openvz/.mirrorkeeper/trace") and exists(s3, "pub/openvz/README")
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="state/openvz/runs/last.json")["Body"].read())
    assert report["result"] == "success"
    assert runs(s3, "debian") == []
    summary = json.loads(host.sync_log.read_text().splitlines()[-1])
    assert (summary["mirror"], summary["result"]) == ("openvz", "success")
    (ended,) = wait_for_lines(host, "the sync a push started ended")
    assert (ended["mirror"], ended["exit_code"]) == ("openvz", 0)


def wait_for_lines(host: PushHost, message: str) -> list[dict[str, Any]]:
    """serve-push's log lines saying ``message``, once there is one."""
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [line for line in host.log_lines() if line["message"] == message]
        return bool(found)

    wait_until(f"serve-push to log {message!r}", logged)
    return found


def test_every_refusal_has_its_status_and_reason_and_starts_nothing(
    push_host: Callable[..., PushHost], s3: Any
) -> None:
    host = push_host()
    now = int(time.time())
    openvz = "/push/openvz"
    big = b"x" * (10 * 1024 * 1024)
    cases = {
        "bad signature": host.curl(openvz, secret="not the secret"),
        "the other mirror's secret": host.curl(openvz, secret=SECRETS["debian"]),
        "no signature": host.curl(openvz, secret=None),
        "no timestamp": host.curl(openvz, stamped=False),
        "stale": host.curl(openvz, timestamp=now - 301),
        "future": host.curl(openvz, timestamp=now + 400),
        "unknown mirror": host.curl("/push/centos"),
        "oversized": host.curl(openvz, body=b"x" * (MAX_BODY + 1)),
        "ten megabytes": host.curl(openvz, body=big),
        "not a push route": host.curl("/sync/openvz"),
        "dot segments": host.curl("/push/centos/../openvz", b"{}", SECRETS["openvz"], None, "--path-as-is"),
        "not a POST": host.curl(openvz, b"{}", SECRETS["openvz"], None, "-X", "PUT"),
    }
    statuses = {name: status for name, (status, _, _) in cases.items()}
    assert statuses == {
        "bad signature": 401,
        "the other mirror's secret": 401,
        "no signature": 401,
        "no timestamp": 401,
        "stale": 403,
        "future": 403,
        "unknown mirror": 404,
        "oversized": 413,
        "ten megabytes": 413,
        "not a push route": 404,
        "dot segments": 404,
        "not a POST": 405,
    }
    # AND requests whose body cannot be sized before it is read never reach the handler
    chunked = host.curl(openvz, b"{}", SECRETS["openvz"], None, "-H", "Transfer-Encoding: chunked")
    garbage = host.curl(openvz, b"{}", SECRETS["openvz"], None, "-H", "Content-Length: 2x")
    assert (chunked[0], garbage[0]) == (411, 400)
    # each answer says what was wrong
    assert "check the sender's clock" in cases["stale"][1]["error"]
    assert cases["unknown mirror"][1]["error"] == "no mirror 'centos' takes pushes here"
    # AND nothing started: no sync process, no run, no lease, no push state, not even a replay mark
    time.sleep(1)
    assert not host.sync_log.exists() or host.sync_log.read_text() == ""
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    # AND each refusal is logged with its reason, never with a secret or a signature
    refused = [line for line in host.log_lines() if line["message"] == "push refused"]
    assert sorted(line["status"] for line in refused) == sorted(statuses.values())
    reasons = {line["reason"] for line in refused}
    assert {"bad signature", "unsigned", "no such mirror", "no such route"} <= reasons
    assert any(re.fullmatch(r"timestamp 30\d s off the endpoint's clock", reason) for reason in reasons)
    log_text = host.log.read_text()
    assert not any(secret in log_text for secret in SECRETS.values())
    assert "sha256=" not in log_text


def test_a_replayed_push_and_one_over_the_rate_are_refused_and_start_nothing(
    push_host: Callable[..., PushHost], s3: Any
) -> None:
    host = push_host(debian_extra="push_rate_limit = 2")
    # GIVEN a valid push, which starts debian's sync
    body = b'{"nonce": "once"}'
    stamp = int(time.time())
    first = host.curl("/push/debian", body, SECRETS["debian"], stamp)
    assert (first[0], first[1]["result"]) == (202, "started")
    # WHEN the very same request is sent again THEN it is refused as used
    again = host.curl("/push/debian", body, SECRETS["debian"], stamp)
    assert again[0] == 403 and "used already" in again[1]["error"]
    # WHEN pushes go over the mirror's rate (2 a minute) THEN the third is 429 with Retry-After
    second = host.curl("/push/debian", b'{"nonce": "2"}', SECRETS["debian"])
    third = host.curl("/push/debian", b'{"nonce": "3"}', SECRETS["debian"])
    assert second[0] == 202 and third[0] == 429 and 0 < int(third[2]["Retry-After"]) <= 60
    # AND `mirrorkeeper push` says so in one line, exit 3: try again later
    result = host.push("debian")
    assert result.returncode == 3 and len(result.stderr.strip().splitlines()) == 1
    assert "answered 429" in result.stderr and "send the push again later" in result.stderr
    # AND exactly the first push's sync ran, with the one follow-up the second push asked for
    wait_until("debian's syncs", settled(s3, "debian", 2))
    time.sleep(1)
    assert len(runs(s3, "debian")) == 2


def test_pushes_during_a_sync_make_exactly_one_follow_up(push_host: Callable[..., PushHost], s3: Any) -> None:
    # GIVEN a mirror whose first sync takes several seconds (1.4 MB at 200 KiB/s)
    host = push_host(openvz_extra='bwlimit = "200K"')
    write_file(host.upstreams["openvz"] / "big.iso", b"\xaa" * 240_000, 1_700_000_000)
    assert host.push("openvz").returncode == 0
    wait_until("the sync to take its lease", lambda: exists(s3, "state/openvz/lock.json"))
    # WHEN upstream publishes again while it runs, and pushes three times
    write_file(host.upstreams["openvz"] / "later/new.rpm", b"new", 1_700_000_100)
    answers = [host.push("openvz") for _ in range(3)]
    # THEN each is accepted as queued behind the running sync
    assert [a.stdout.split(":")[0] for a in answers] == ["202 queued"] * 3, [a.stderr for a in answers]
    assert "runs once more after it" in answers[0].stdout
    # AND the sync runs exactly once more, after which what the pushes announced is published
    wait_until("the sync and its follow-up", settled(s3, "openvz", 2), timeout=90)
    assert exists(s3, "pub/openvz/later/new.rpm")
    time.sleep(2)  # no third run comes
    first, second = (json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) for key in runs(s3, "openvz"))
    assert len(runs(s3, "openvz")) == 2
    assert first["finished"] <= second["started"]  # one after the other, never two at once
    assert second["uploaded_files"] >= 1
    # AND one process did both: serve-push started one sync, which ended once
    assert len(wait_for_lines(host, "the sync a push started ended")) == 1
    assert len(wait_for_lines(host, "push started a sync")) == 1


def test_mirrorkeeper_push_says_what_went_wrong_in_one_line(push_host: Callable[..., PushHost], tmp_path: Path) -> None:
    host = push_host()
    cases = {
        "wrong secret": (host.push("openvz", "debian"), 1, "answered 401"),
        "unknown mirror": (host.push("centos", "openvz"), 1, "answered 404: no mirror 'centos' takes pushes here"),
    }
    missing = tmp_path / "missing.push"
    cases["unreadable secret"] = (
        run_push(["--url", host.url, "--mirror", "openvz", "--secret-file", str(missing)]),
        2,
        f"--secret-file: cannot read {missing}",
    )
    cases["nobody listening"] = (
        run_push(
            [
                "--url",
                f"http://127.0.0.1:{free_port()}/",
                "--mirror",
                "openvz",
                "--secret-file",
                str(host.secret_files["openvz"]),
            ]
        ),
        3,
        "cannot reach",
    )
    cases["no url"] = (run_push(["--mirror", "openvz", "--secret-file", "x"]), 2, "no url given: pass --url")
    for name, (result, code, text) in cases.items():
        assert result.returncode == code, (name, result.stderr)
        assert result.stdout == "", name
        assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr, (name, result.stderr)


def run_push(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirrorkeeper", "push", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("config", "extra", "message"),
    [
        ('[mirrors.openvz]\nupstream = "rsync://h/m/"\n', [], "no mirror takes pushes"),
        (
            '[mirrors.openvz]\nupstream = "rsync://h/m/"\npush_secret_file = "/nonexistent/openvz.push"\n',
            [],
            "[mirrors.openvz] push secret: cannot read /nonexistent/openvz.push",
        ),
        ('[mirrors.openvz]\nupstream = "rsync://h/m/"\npush_secret = "hunter2"\n', [], "never the secret itself"),
        ("", ["--push-secret-file", "/dev/null", "--sync-task-definition", "mk-sync"], "needs --sync-cluster"),
    ],
)
def test_bad_serve_push_settings_exit_2_with_one_line(
    tmp_path: Path, s3: Any, endpoint: str, config: str, extra: list[str], message: str
) -> None:
    path = tmp_path / "mirrors.toml"
    path.write_text(f'bucket = "{BUCKET}"\n{config}')
    result = run_cli(["serve-push", "--config", str(path), "--port", "0", *extra], endpoint, timeout=30)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
