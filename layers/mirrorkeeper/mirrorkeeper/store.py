"""The object store adapter: every S3 call the sync makes goes through here."""

import base64
import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from mirrorkeeper.aws import S3Client
from mirrorkeeper.entries import Entry
from mirrorkeeper.errors import StorageError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.manifest import ManifestError, ManifestHeader, read_manifest, write_manifest

MTIME_META = "mtime"  # x-amz-meta-mtime: upstream mtime, epoch seconds
SYMLINK_META = "symlink-target"  # x-amz-meta-symlink-target: the link's text, for FTP listings
# User metadata on the published manifest, so the next run can tell "upstream listed exactly what
# this manifest was made from" without reading it (see SyncRun._listing_key).
LISTING_META = "listing-sha256"
ENTRIES_META = "mirror-entries"
BYTES_META = "mirror-bytes"
SKIPPED_META = "skipped-total"
RUN_META = "run-id"
# Set (and LISTING_META dropped) by the drift check when S3 no longer matches the manifest: the next
# sync reads the repair list instead of trusting the listing shortcut.
REPAIR_META = "repair"
HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> tuple[bytes, bytes | None, int]:
    """The SHA-256 digest, the content itself when small enough to send in one PUT, and the size."""
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
            if size <= 8 * HASH_CHUNK:
                chunks.append(chunk)
    return digest.digest(), b"".join(chunks) if size <= 8 * HASH_CHUNK else None, size


def _error_code(exc: Exception) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


@contextmanager
def s3_errors(action: str) -> Iterator[None]:
    """Turn botocore failures (after its retries) into a StorageError that says what failed."""
    try:
        yield
    except ClientError as exc:
        raise StorageError(
            f"S3 refused to {action}: {_error_code(exc)}: {exc}; check the bucket, the "
            "credentials and the task role, then rerun"
        ) from None
    except BotoCoreError as exc:
        raise StorageError(
            f"the S3 request to {action} did not complete: {exc}; "
            "check the credentials, --endpoint-url and the network, then rerun"
        ) from None


class MirrorStore:
    def __init__(
        self, client: S3Client, layout: MirrorLayout, multipart_threshold: int = 64 * 1024**2, part_concurrency: int = 4
    ) -> None:
        self.client = client
        self.layout = layout
        self.bucket = layout.bucket
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            max_concurrency=part_concurrency,
            multipart_chunksize=max(8 * 1024**2, multipart_threshold // 8),
        )

    # -- state --------------------------------------------------------------------------------

    def check_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise StorageError(
                f"bucket {self.bucket!r} is not usable ({_error_code(exc) or exc}); create it or fix "
                "--bucket and the credentials"
            ) from None
        except BotoCoreError as exc:
            raise StorageError(
                f"cannot use bucket {self.bucket!r}: {exc}; check the credentials, --endpoint-url and the network"
            ) from None

    @contextmanager
    def open_manifest(self, key: str | None = None) -> Iterator[Iterator[Entry]]:
        """Stream the published manifest's entries; empty when none was ever published."""
        key = key or self.layout.manifest_key
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                yield iter(())
                return
            raise StorageError(f"cannot read the manifest s3://{self.bucket}/{key}: {exc}") from None
        body = response["Body"]
        try:
            _, entries = read_manifest(body)
            yield _guarded(entries, self.bucket, key)
        except ManifestError as exc:
            raise StorageError(
                f"the manifest s3://{self.bucket}/{key} is damaged ({exc}); restore it from S3 "
                "versioning or delete it to force a full comparison"
            ) from None
        finally:
            body.close()

    def manifest_metadata(self, key: str | None = None) -> dict[str, str] | None:
        """The published manifest's user metadata (one HEAD, the body stays unread); None if there is none."""
        key = key or self.layout.manifest_key
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise StorageError(f"cannot read the manifest s3://{self.bucket}/{key}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot read the manifest s3://{self.bucket}/{key}: {exc}") from None
        return dict(response.get("Metadata", {}))

    def put_manifest(
        self, key: str, header: ManifestHeader, entries: Iterable[Entry], metadata: dict[str, str] | None = None
    ) -> int:
        with tempfile.TemporaryFile() as spool:
            count = write_manifest(spool, header, entries)
            spool.seek(0)
            with s3_errors(f"write {key}"):
                self.client.upload_fileobj(
                    spool,
                    self.bucket,
                    key,
                    ExtraArgs={
                        "ContentType": "application/gzip",
                        "ChecksumAlgorithm": "SHA256",
                        "Metadata": metadata or {},
                    },
                    Config=self._transfer,
                )
        return count

    def put_bytes(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        extra: dict[str, Any] = {"CacheControl": cache_control} if cache_control else {}
        with s3_errors(f"write {key}"):
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=metadata or {},
                ChecksumSHA256=_b64_sha256(body),
                **extra,
            )

    # -- mirror content ---------------------------------------------------------------------

    def upload_file(self, key: str, local: Path, content_type: str, metadata: dict[str, str]) -> bytes:
        """Upload ``local``; S3 verifies a SHA-256 checksum. Returns the file's SHA-256 digest."""
        digest, body, _ = sha256_file(local)
        with s3_errors(f"upload {key}"):
            if body is not None:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentType=content_type,
                    Metadata=metadata,
                    ChecksumSHA256=base64.b64encode(digest).decode(),
                )
            else:
                self.client.upload_file(
                    str(local),
                    self.bucket,
                    key,
                    Config=self._transfer,
                    ExtraArgs={"ContentType": content_type, "Metadata": metadata, "ChecksumAlgorithm": "SHA256"},
                )
        return digest

    def copy(self, source_key: str, key: str, content_type: str, metadata: dict[str, str]) -> None:
        with s3_errors(f"copy {source_key} to {key}"):
            self.client.copy(
                {"Bucket": self.bucket, "Key": source_key},
                self.bucket,
                key,
                Config=self._transfer,
                ExtraArgs={
                    "ContentType": content_type,
                    "Metadata": metadata,
                    "MetadataDirective": "REPLACE",
                    "ChecksumAlgorithm": "SHA256",
                },
            )

    def delete_keys(self, keys: Iterable[str]) -> int:
        batch: list[str] = []
        deleted = 0
        for key in keys:
            batch.append(key)
            if len(batch) == 1000:
                deleted += self._delete_batch(batch)
                batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def _delete_batch(self, keys: list[str]) -> int:
        with s3_errors(f"delete {len(keys)} objects"):
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise StorageError(
                f"S3 failed to delete {len(errors)} of {len(keys)} objects (first: {first.get('Key')!r}: "
                f"{first.get('Code')} {first.get('Message')}); the next run retries"
            )
        return len(keys)


def _b64_sha256(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def _guarded(entries: Iterator[Entry], bucket: str, key: str) -> Iterator[Entry]:
    try:
        yield from entries
    except ManifestError as exc:
        raise StorageError(
            f"the manifest s3://{bucket}/{key} is damaged ({exc}); restore it from S3 versioning "
            "or delete it to force a full comparison"
        ) from None
