"""The sync's writes to the served tree: uploads, server-side copies, small pages, deletions.

Private state (manifest, reports, lease) is read and written by :mod:`mirrorkeeper.state`.
"""

import base64
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from mirrorkeeper.aws import S3Client
from mirrorkeeper.errors import StorageError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.s3errors import s3_errors

HASH_CHUNK = 1 << 20
log = logging.getLogger(__name__)


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

    # -- one file in parts, as it arrives (sync/stream.py)

    def start_parts(self, key: str, content_type: str, metadata: dict[str, str]) -> str:
        with s3_errors(f"start uploading {key} in parts"):
            response = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type, Metadata=metadata, ChecksumAlgorithm="SHA256"
            )
        return str(response["UploadId"])

    def put_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        checksum = _b64_sha256(body)
        with s3_errors(f"upload part {number} of {key}"):
            response = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ChecksumSHA256=checksum
            )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def finish_parts(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        with s3_errors(f"complete the upload of {key}"):
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )

    def abandon_parts(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload (its parts cost storage until then); failures only log."""
        try:
            with s3_errors(f"abort the upload of {key}"):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StorageError as exc:
            log.warning(
                "could not abort a multipart upload; the bucket's lifecycle rule removes it", extra={"error": str(exc)}
            )

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
