"""The S3 client every command builds, against the moto server."""

from typing import Any

from mirrorkeeper.aws import CONTINUE_THRESHOLD, s3_client
from mirrorkeeper.config import AwsConfig
from tests.support import BUCKET


def test_only_bodies_of_the_threshold_or_more_wait_for_100_continue(s3: Any, endpoint: str) -> None:
    client = s3_client(AwsConfig(endpoint, "us-east-1"))
    expect_by_length: dict[int, object] = {}

    def record(request: Any, **_: Any) -> None:
        expect_by_length[int(request.headers["Content-Length"])] = request.headers.get("Expect")

    client.meta.events.register("before-send.s3.PutObject", record)
    bodies = {f"size-{n}": bytes([n % 251]) * n for n in (0, 200, CONTINUE_THRESHOLD - 1, CONTINUE_THRESHOLD)}
    for key, body in bodies.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    assert expect_by_length == {0: None, 200: None, CONTINUE_THRESHOLD - 1: None, CONTINUE_THRESHOLD: b"100-continue"}
    for key, body in bodies.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
