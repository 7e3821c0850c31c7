"""AWS clients, built in one place: adaptive retries, a connection pool sized for our
concurrency, the local endpoint when one is configured, and a count of requests sent."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError
from botocore.utils import determine_content_length

from mirrorkeeper.errors import StorageError, StoreUnreachableError
from mirrorkeeper.s3errors import error_code

__all__ = [
    "CONTINUE_THRESHOLD",
    "RequestCounter",
    "S3Client",
    "SharedClients",
    "check_bucket",
    "client_config",
    "s3_client",
    "service_client",
]

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from mirrorkeeper.config import AwsConfig  # only a type here: config imports this module
else:
    S3Client = Any

# botocore asks S3 for "100 Continue" before sending any PutObject or UploadPart body: a round
# trip of its own, which doubles the latency of a small write (a trace file, a run report, a
# small mirrored file). Waiting is worth it only when a refused body would waste real transfer
# time; the AWS SDK for Kotlin and the JavaScript SDK draw the line at 2 MB and 1 MB.
CONTINUE_THRESHOLD = 2 * 1024 * 1024
# An endpoint that refuses connections, does not resolve or never answers a SYN will not start
# working within a run: give up on it after this long (or this many attempts) instead of spending
# every one of the adaptive retries, which throttling and 5xx answers keep.
CONNECT_TIMEOUT = 4
UNREACHABLE_AFTER_SECONDS = 9.0
UNREACHABLE_AFTER_ATTEMPTS = 2


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
    _give_up_on_unreachable(client)
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


def _give_up_on_unreachable(client: Any) -> None:
    client.meta.events.register_first("needs-retry", _unreachable_check)


def _unreachable_check(
    attempts: int, caught_exception: BaseException | None, request_dict: dict[str, Any], **_: Any
) -> None:
    """A needs-retry handler: raising here ends the request at once, with a sentence (returning None lets
    botocore's own retry logic decide, as it does for every other failure)."""
    if not isinstance(caught_exception, EndpointConnectionError | ConnectTimeoutError):
        return
    context = request_dict.setdefault("context", {})
    first = context.setdefault("mirrorkeeper_first_connect_failure", time.monotonic())
    if attempts >= UNREACHABLE_AFTER_ATTEMPTS or time.monotonic() - first >= UNREACHABLE_AFTER_SECONDS:
        raise StoreUnreachableError(
            f"cannot reach the AWS endpoint ({caught_exception}); check --endpoint-url / AWS_ENDPOINT_URL, the "
            "region, DNS and the network. What the mirror serves stays as the last complete step left it"
        )


def client_config(aws: AwsConfig, pool_size: int = 10) -> Config:
    return Config(
        region_name=aws.region,
        retries={"mode": "adaptive", "max_attempts": aws.max_attempts},
        max_pool_connections=pool_size,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=60,
    )


def service_client(service: str, aws: AwsConfig) -> Any:
    """A client for CloudWatch, SNS and the like, with the same retries and endpoint as S3's."""
    client = boto3.session.Session().client(service, endpoint_url=aws.endpoint_url, config=client_config(aws))
    _give_up_on_unreachable(client)
    return client


class SharedClients:
    """Clients built once and shared by every part of a run that reaches AWS the same way (verify over
    a host's mirrors, several at once): boto3's clients are thread-safe, and building one loads its
    service model afresh, about 0.2 s of CPU, which for a host of many mirrors was most of verify's
    own time. Not for clients that count their requests: a counter is one client's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[tuple[str, AwsConfig], Any] = {}

    def s3(self, aws: AwsConfig) -> S3Client:
        client: S3Client = self._get("s3", aws)
        return client

    def service(self, service: str, aws: AwsConfig) -> Any:
        return self._get(service, aws)

    def _get(self, service: str, aws: AwsConfig) -> Any:
        with self._lock:
            if (service, aws) not in self._built:
                self._built[service, aws] = s3_client(aws) if service == "s3" else service_client(service, aws)
            return self._built[service, aws]


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
