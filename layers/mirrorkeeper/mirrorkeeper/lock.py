"""One sync at a time: a lease object written with S3 conditional writes.

Taking the lease is ``PutObject If-None-Match: *`` (only one writer can create it). Renewing it
and taking over an expired one are ``PutObject If-Match: <etag we read>``, so of two runs that
both see an expired lease, only one wins. A background thread renews the lease every third of
its time to live; if a renewal finds the lease taken, the run stops before publishing more.
"""

import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mirrorkeeper.aws import S3Client
from mirrorkeeper.errors import LockHeldError, LockLostError, StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseInfo:
    owner: str
    host: str
    acquired_at: float
    expires_at: float

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> "LeaseInfo | None":
        try:
            data = json.loads(body)
            return cls(
                str(data["owner"]), str(data.get("host", "?")), float(data["acquired_at"]), float(data["expires_at"])
            )
        except (ValueError, KeyError, TypeError):
            return None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class Lease:
    def __init__(self, client: S3Client, bucket: str, key: str, ttl: float, clock: Any = time.time) -> None:
        self.client, self.bucket, self.key, self.ttl, self.clock = client, bucket, key, ttl, clock
        self.owner = uuid.uuid4().hex
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False
        self.lost: str | None = None

    def _info(self, acquired_at: float) -> LeaseInfo:
        now = self.clock()
        return LeaseInfo(self.owner, socket.gethostname(), acquired_at, now + self.ttl)

    def _put(self, acquired_at: float, if_match: str | None = None) -> bool:
        """Create the lease (no ``if_match``) or replace the version we read (``if_match`` = its ETag)."""
        body = self._info(acquired_at).to_bytes()
        try:
            if if_match is None:
                response = self.client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json", IfNoneMatch="*"
                )
            else:
                response = self.client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json", IfMatch=if_match
                )
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            if _code(exc) == "NoSuchBucket":
                # Taking the lock is a run's first request: it doubles as the bucket check.
                raise StorageError(
                    f"bucket {self.bucket!r} is not usable (NoSuchBucket); create it or fix --bucket"
                ) from None
            raise StorageError(f"cannot write the sync lock s3://{self.bucket}/{self.key}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach S3 to take the sync lock: {exc}") from None
        self._etag = response["ETag"]
        return True

    def acquire(self) -> None:
        self._acquired_at = self.clock()
        if self._put(self._acquired_at):
            return
        try:
            current = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404") and self._put(self._acquired_at):
                return
            raise LockHeldError(
                "another sync took the lock just now; this run did nothing, the next one will sync"
            ) from None
        info = LeaseInfo.from_bytes(current["Body"].read())
        if info is not None and info.expires_at > self.clock():
            raise LockHeldError(
                f"another sync (owner {info.owner[:8]} on {info.host}) holds the lock until "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(info.expires_at))}; this run did nothing. "
                f"If that sync is dead, wait for the lease to expire or delete s3://{self.bucket}/{self.key}"
            )
        if not self._put(self._acquired_at, if_match=current["ETag"]):
            raise LockHeldError("another sync took over the expired lock first; this run did nothing")
        log.warning("took over an expired sync lock", extra={"previous_owner": info.owner if info else "unreadable"})

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self._put(self._acquired_at, if_match=self._etag or ""):
                    self.lost = "another process replaced our sync lock (our lease had expired)"
                    return
            except StorageError as exc:
                log.warning("lease renewal failed; will retry", extra={"error": str(exc)})

    def check(self) -> None:
        """Raise if the lease was lost: called between publishing steps."""
        if self.lost:
            raise LockLostError(f"{self.lost}; stopped before publishing more. Raise --lock-ttl if runs are slow")

    def stop_renewing(self) -> None:
        """Stop the renewal thread; after this the lease changes only by ``release()``."""
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def will_release(self) -> bool:
        """Whether ``release()`` is still to send its DELETE (we hold the lease and have not let go)."""
        return self._etag is not None and not self.lost and not self._released

    def release(self) -> None:
        self.stop_renewing()
        etag = self._etag
        if etag is None or not self.will_release:
            return
        self._released = True
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not release the sync lock; it expires by itself", extra={"error": str(exc)})

    def __enter__(self) -> "Lease":
        self.acquire()
        self.start_renewing()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
