"""The push contract's signature, time window and the handler's refusals that need no storage (no network:
a refusal before the replay check must not touch the bucket, and these tests give it none to touch)."""

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from mirrorkeeper.config import PushMirror, load_push_config, push_name
from mirrorkeeper.errors import ConfigError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.push.handler import PushAnswer, PushHandler, PushRequest
from mirrorkeeper.push.signature import MAX_BODY, WINDOW, sign, signature_matches, skew, well_formed

SECRET = b"s3cret-of-openvz"
NOW = 1_780_000_000.0
BODY = b'{"nonce": "1"}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # GIVEN the contract's recipe, computed independently
    expected = "sha256=" + hmac.new(SECRET, b"1780000000." + BODY, hashlib.sha256).hexdigest()
    # THEN sign() produces it and signature_matches() accepts exactly it
    assert sign(SECRET, "1780000000", BODY) == expected
    assert signature_matches(SECRET, "1780000000", BODY, expected)
    for other in (
        sign(b"another secret", "1780000000", BODY),
        sign(SECRET, "1780000001", BODY),
        sign(SECRET, "1780000000", BODY + b" "),
        expected.upper(),
    ):
        assert not signature_matches(SECRET, "1780000000", BODY, other)


@pytest.mark.parametrize(
    ("timestamp", "signature", "ok"),
    [
        ("1780000000", "sha256=" + "a" * 64, True),
        ("1780000000", "sha256=" + "a" * 63, False),
        ("1780000000", "sha1=" + "a" * 40, False),
        ("1780000000", "sha256=" + "A" * 64, False),
        ("", "sha256=" + "a" * 64, False),
        ("1" * 21, "sha256=" + "a" * 64, False),
        ("１７８", "sha256=" + "a" * 64, False),  # fullwidth digits
    ],
)
def test_only_well_formed_headers_are_worth_an_hmac(timestamp: str, signature: str, ok: bool) -> None:
    assert well_formed(timestamp, signature) is ok


@pytest.mark.parametrize(
    ("timestamp", "off"),
    [
        (str(int(NOW)), 0.0),
        (str(int(NOW) - WINDOW), float(WINDOW)),
        (str(int(NOW) + WINDOW + 1), WINDOW + 1.0),
        ("-5", None),
        ("1.5e9", None),
        ("٣", None),  # an Arabic-Indic digit: str.isdigit() says yes, int() would take it
    ],
)
def test_skew_is_whole_epoch_seconds_either_way(timestamp: str, off: float | None) -> None:
    assert skew(timestamp, NOW) == off


def test_a_host_of_one_takes_pushes_under_its_name_made_a_mirror_name() -> None:
    assert push_name("openvz") == "openvz"
    assert push_name("OpenVZ Download") == "openvz-download"
    assert push_name("mirror.example.org") == "mirror-example-org"
    assert push_name("A" * 80) == "a" * 63
    assert push_name("...") == "mirror"


# -- the handler's refusals before the replay check: no storage at all -----------------------------


class NoStorage:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the handler touched the bucket ({name}) before the signature was good")


class NoStart:
    def start(self, mirror: PushMirror) -> str:
        raise AssertionError("a refused push started a sync")


MIRRORS = {
    "openvz": PushMirror("openvz", "openvz", MirrorLayout.create("b", path="openvz"), "file:/never/read"),
    "quiet": PushMirror("quiet", "quiet", MirrorLayout.create("b", path="quiet"), ""),
    "resting": PushMirror("resting", "resting", MirrorLayout.create("b", path="resting"), "env:X", paused=True),
}


def handler(secret_reads: list[str]) -> PushHandler:
    def secret(mirror: PushMirror) -> bytes:
        secret_reads.append(mirror.name)
        return SECRET

    return PushHandler(MIRRORS, NoStorage(), MirrorLayout.create("b"), secret, NoStart(), clock=lambda: NOW)  # type: ignore[arg-type]


def request(
    path: str = "/push/openvz",
    method: str = "POST",
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    length: int | None = None,
    timestamp: str = str(int(NOW)),
) -> tuple[PushRequest, list[bool]]:
    """A request signed as the contract says unless ``headers`` say otherwise; the list records body reads."""
    reads: list[bool] = []

    def read() -> bytes:
        reads.append(True)
        return body

    signed = {
        "x-mirrorkeeper-timestamp": timestamp,
        "x-mirrorkeeper-signature": sign(SECRET, timestamp, body),
    }
    return PushRequest(method, path, headers if headers is not None else signed, length, read, "192.0.2.1"), reads


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/push/", "POST", 404),
        ("/push/openvz/more", "POST", 404),
        ("/", "POST", 404),
        ("/push/openvz", "GET", 405),
        ("/push/nosuch", "POST", 404),
        ("/push/quiet", "POST", 404),  # exists, but has no push secret
        ("/push/resting", "POST", 404),  # paused
    ],
)
def test_routes_methods_and_mirrors_that_take_no_pushes(path: str, method: str, status: int) -> None:
    reads: list[str] = []
    push, body_reads = request(path, method)
    answer = handler(reads).handle(push)
    assert answer.status == status
    assert reads == []  # no secret is read for a push that never reaches the signature check
    if status == 405:
        assert answer.headers["Allow"] == "POST" and body_reads == []


def test_a_body_over_64_kib_is_refused_from_its_declared_length_before_it_is_read() -> None:
    push, reads = request(path="/push/nosuch", length=MAX_BODY + 1)
    # 413 even for a mirror that does not exist: the size is checked first, and the body never read
    assert handler([]).handle(push).status == 413 and reads == []
    # a body longer than it said is caught once read
    push, reads = request(body=b"x" * (MAX_BODY + 1), length=10)
    assert handler([]).handle(push).status == 413 and reads == [True]
    # exactly 64 KiB is allowed through to the next checks
    push, _ = request(body=b"x" * MAX_BODY, length=MAX_BODY, headers={})
    assert handler([]).handle(push).status == 401


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "no X-Mirrorkeeper-Signature header"),
        ({"x-mirrorkeeper-signature": sign(SECRET, "1", BODY)}, "no X-Mirrorkeeper-Timestamp header"),
        ({"x-mirrorkeeper-timestamp": str(int(NOW)), "x-mirrorkeeper-signature": "sha256=zz"}, "the signature is not"),
        (
            {
                "x-mirrorkeeper-timestamp": str(int(NOW)),
                "x-mirrorkeeper-signature": sign(b"wrong", str(int(NOW)), BODY),
            },
            "the signature is not",
        ),
        (
            # signed for another timestamp than the one sent
            {"x-mirrorkeeper-timestamp": str(int(NOW)), "x-mirrorkeeper-signature": sign(SECRET, "1", BODY)},
            "the signature is not",
        ),
    ],
)
def test_a_missing_or_bad_signature_is_401(headers: dict[str, str], error: str) -> None:
    push, _ = request(headers=headers)
    answer = handler([]).handle(push)
    assert answer.status == 401 and error in answer.document["error"]


@pytest.mark.parametrize("offset", [-WINDOW - 1, WINDOW + 1, -86400, 10**9])
def test_a_good_signature_on_a_stale_or_future_timestamp_is_403(offset: int) -> None:
    push, _ = request(timestamp=str(int(NOW) + offset))
    answer = handler([]).handle(push)
    assert answer.status == 403 and "check the sender's clock" in answer.document["error"]


def test_the_window_edges_reach_the_replay_check() -> None:
    # 300 s either way is inside: the handler goes on to mark the signature used (here: touches storage)
    for offset in (-WINDOW, WINDOW):
        push, _ = request(timestamp=str(int(NOW) + offset))
        with pytest.raises(AssertionError, match="touched the bucket"):
            handler([]).handle(push)


def test_answers_are_json_with_the_status() -> None:
    answer = PushAnswer(202, {"result": "started", "mirror": "openvz", "message": "m"})
    assert json.loads(answer.body) == {"status": 202, "result": "started", "mirror": "openvz", "message": "m"}


# -- settings ------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mirrors.toml"
    path.write_text(text)
    return str(path)


def test_each_mirror_has_its_secret_its_place_and_its_rate(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """[host]
bucket = "my-mirror-bucket"
push_rate_limit = 4
[mirrors.openvz]
upstream = "rsync://u.example.org/openvz/"
push_secret_file = "/etc/mirrorkeeper/openvz.push"
[mirrors.debian]
upstream = "rsync://u.example.org/debian/"
path = "linux/debian"
push_secret = "secretsmanager:mirrorkeeper/push/debian"
push_rate_limit = 10
[mirrors.centos]
upstream = "rsync://u.example.org/centos/"
""",
    )
    mirrors = load_push_config({"config": config}, {}).mirrors
    assert mirrors["openvz"].secret == "file:/etc/mirrorkeeper/openvz.push" and mirrors["openvz"].rate_limit == 4
    assert mirrors["debian"].secret == "secretsmanager:mirrorkeeper/push/debian" and mirrors["debian"].rate_limit == 10
    assert mirrors["debian"].layout.state_prefix == "state/linux/debian/" and mirrors["debian"].table == "debian"
    assert mirrors["centos"].closed == "it has no push secret"


def test_a_host_of_one_takes_pushes_under_its_mirror_name(tmp_path: Path) -> None:
    config = load_push_config({"bucket": "my-bucket", "mirror_name": "OpenVZ", "push_secret_file": "/s"}, {})
    assert list(config.mirrors) == ["openvz"]
    (mirror,) = config.mirrors.values()
    assert (
        mirror.table == ""
        and mirror.layout.state_prefix == "state/"
        and config.layout.host_state_prefix == ("state/.host/")
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"bucket": "my-bucket", "push_secret": "env:A", "push_secret_file": "/s"}, "keep one"),
        ({"bucket": "my-bucket", "push_secret": "hunter2"}, "never the secret itself"),
        ({"bucket": "my-bucket", "sync_task_definition": "mk-sync"}, "needs --sync-cluster and --sync-subnets"),
        ({"bucket": "my-bucket", "sync_subnets": "subnet-1,bad id"}, "is not a resource id"),
        ({"bucket": "my-bucket", "push_rate_limit": "0"}, "--push-rate-limit='0' is invalid"),
        ({}, "no bucket given"),
    ],
)
def test_bad_push_settings_are_config_errors(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_push_config(flags, {})
