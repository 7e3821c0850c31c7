"""AWS clients, built in one place: adaptive retries, a connection pool sized for our
concurrency, the local endpoint when one is configured, and a count of requests sent."""

import threading
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import determine_content_length

from mirrorkeeper.config import AwsConfig
from mirrorkeeper.errors import StorageError
from mirrorkeeper.s3errors import error_code

__all__ = [
    "CONTINUE_THRESHOLD",
    "RequestCounter",
    "S3Client",
    "check_bucket",
    "client_config",
    "s3_client",
    "service_client",
]

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

# botocore asks S3 for "100 Continue" before sending any PutObject or UploadPart body: a round
# trip of its own, which doubles the latency of a small write (a trace file, a run report, a
# small mirrored file). Waiting is worth it only when a refused body would waste real transfer
# time; the AWS SDK for Kotlin and the JavaScript SDK draw the line at 2 MB and 1 MB.
CONTINUE_THRESHOLD = 2 * 1024 * 1024


class RequestCounter:
    """Counts HTTP requests sent (retries included) and API calls per operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.by_operation: dict[str, int] = {}

    def on_send(self, **_: Any) -> None:
        with self._lock:
            self.total += 1

    def on_call(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.by_operation[model.name] = self.by_operation.get(model.name, 0) + 1

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-send", self.on_send)
        client.meta.events.register("before-call", self.on_call)


def s3_client(aws: AwsConfig, counter: RequestCounter | None = None, pool_size: int = 32) -> S3Client:
    config = client_config(aws, pool_size)
    if aws.endpoint_url:
        # Path-style keeps local endpoints (moto, MinIO) working; AWS accepts it too.
        config = config.merge(Config(s3={"addressing_style": "path"}))
    client = boto3.session.Session().client("s3", endpoint_url=aws.endpoint_url, config=config)
    # Last among the handlers of "before-call.s3", where botocore adds the header.
    client.meta.events.register_last("before-call.s3", expect_continue_only_for_large_bodies)
    if counter is not None:
        counter.attach(client)
    return client  # type: ignore[no-any-return]


def expect_continue_only_for_large_bodies(params: dict[str, Any], **_: Any) -> None:
    """Drop ``Expect: 100-continue`` from requests whose body is smaller than CONTINUE_THRESHOLD."""
    headers = params.get("headers", {})
    if headers.get("Expect") == "100-continue":
        length = determine_content_length(params.get("body"))
        if length is not None and length < CONTINUE_THRESHOLD:
            del headers["Expect"]


def client_config(aws: AwsConfig, pool_size: int = 10) -> Config:
    return Config(
        region_name=aws.region,
        retries={"mode": "adaptive", "max_attempts": aws.max_attempts},
        max_pool_connections=pool_size,
        connect_timeout=10,
        read_timeout=60,
    )


def service_client(service: str, aws: AwsConfig) -> Any:
    """A client for CloudWatch, SNS and the like, with the same retries and endpoint as S3's."""
    return boto3.session.Session().client(service, endpoint_url=aws.endpoint_url, config=client_config(aws))


def check_bucket(client: S3Client, bucket: str) -> None:
    """One HeadBucket: fail early, with a sentence, when the bucket cannot be used."""
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        raise StorageError(
            f"bucket {bucket!r} is not usable ({error_code(exc) or exc}); create it or fix --bucket and the credentials"
        ) from None
    except BotoCoreError as exc:
        raise StorageError(
            f"cannot use bucket {bucket!r}: {exc}; check the credentials, --endpoint-url and the network"
        ) from None
