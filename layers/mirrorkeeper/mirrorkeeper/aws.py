"""AWS clients, built in one place: adaptive retries, a connection pool sized for our
concurrency, the local endpoint when one is configured, and a count of requests sent."""

import threading
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from mirrorkeeper.config import AwsConfig

__all__ = ["RequestCounter", "S3Client", "s3_client"]

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any


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
    config = Config(
        region_name=aws.region,
        retries={"mode": "adaptive", "max_attempts": aws.max_attempts},
        max_pool_connections=pool_size,
        connect_timeout=10,
        read_timeout=60,
        # Path-style keeps local endpoints (moto, MinIO) working; AWS accepts it too.
        s3={"addressing_style": "path"} if aws.endpoint_url else None,
    )
    client = boto3.session.Session().client("s3", endpoint_url=aws.endpoint_url, config=config)
    if counter is not None:
        counter.attach(client)
    return client  # type: ignore[no-any-return]
