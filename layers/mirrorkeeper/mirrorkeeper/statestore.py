"""The verification side's S3 adapter: read what the sync left, keep health state, publish the
status page. Every call the three verification steps make to S3 goes through here."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mirrorkeeper.aws import S3Client
from mirrorkeeper.drift import RepairList
from mirrorkeeper.errors import StateConflictError, StorageError
from mirrorkeeper.layout import MirrorLayout
from mirrorkeeper.manifest import ManifestError, ManifestHeader, Row, read_manifest_rows
from mirrorkeeper.store import LISTING_META, REPAIR_META, s3_errors

STATUS_CACHE_CONTROL = "no-cache, max-age=0"


def _json_body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404", "NotFound")


class StateStore:
    def __init__(self, client: S3Client, layout: MirrorLayout) -> None:
        self.client = client
        self.layout = layout
        self.bucket = layout.bucket

    def _get(self, key: str) -> Any:
        """GetObject's response, or None when the key does not exist; any other failure (after
        botocore's retries) is a StorageError that says what to check."""
        with s3_errors(f"read s3://{self.bucket}/{key}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise

    @property
    def health_key(self) -> str:
        return self.layout.state_prefix + "health.json"

    @contextmanager
    def manifest_rows(self, key: str) -> Iterator[tuple[ManifestHeader, Iterator[Row]] | None]:
        """Stream a manifest-format file's rows; ``None`` when it does not exist (yet)."""
        response = self._get(key)
        if response is None:
            yield None
            return
        body = response["Body"]
        try:
            yield read_manifest_rows(body)
        except ManifestError as exc:
            raise StorageError(
                f"s3://{self.bucket}/{key} is damaged ({exc}); the next successful sync rewrites it"
            ) from None
        finally:
            body.close()

    def served_objects(self) -> Iterator[tuple[str, int]]:
        """``(key relative to the served prefix, size)`` of every served object, in key order."""
        prefix = self.layout.served_prefix
        paginator = self.client.get_paginator("list_objects_v2")
        with s3_errors(f"list s3://{self.bucket}/{prefix}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield item["Key"][len(prefix) :], int(item["Size"])

    def read_json(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """A JSON document and its ETag; ``(None, None)`` when absent. Unreadable JSON is an error."""
        response = self._get(key)
        if response is None:
            return None, None
        with s3_errors(f"read s3://{self.bucket}/{key}"):
            body = response["Body"].read()
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise StorageError(f"s3://{self.bucket}/{key} is not JSON ({exc}); delete it to start afresh") from None
        if not isinstance(doc, dict):
            raise StorageError(f"s3://{self.bucket}/{key} is not a JSON object; delete it to start afresh")
        return doc, str(response.get("ETag", "")) or None

    def write_json(self, key: str, doc: dict[str, Any], expected_etag: str | None) -> None:
        """Write ``doc`` only if the object is still what we read (``None``: still absent), so two
        verify runs at once cannot silently lose each other's history."""
        body = _json_body(doc)
        try:
            self._put_json(key, body, expected_etag)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code", "") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise StateConflictError(f"s3://{self.bucket}/{key} changed while we worked on it") from None
            with s3_errors(f"write s3://{self.bucket}/{key}"):
                raise

    def _put_json(self, key: str, body: bytes, expected_etag: str | None) -> None:
        if expected_etag:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", IfMatch=expected_etag
            )
        else:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*"
            )

    def repair_list(self) -> RepairList:
        """The drift check's state/repair.json; empty when there is none or it is unreadable (the next
        drift check writes a new one, and a sync needs none to be correct)."""
        response = self._get(self.layout.repair_key)
        if response is None:
            return RepairList()
        with s3_errors(f"read s3://{self.bucket}/{self.layout.repair_key}"):
            body = response["Body"].read()
        try:
            return RepairList.from_json(json.loads(body))
        except (ValueError, AttributeError):
            return RepairList()

    def put_or_delete_json(self, key: str, doc: dict[str, Any] | None) -> None:
        """Write ``doc`` to ``key``, or make sure ``key`` is absent when ``doc`` is None."""
        with s3_errors(f"{'write' if doc is not None else 'delete'} s3://{self.bucket}/{key}"):
            if doc is None:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            else:
                body = _json_body(doc)
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    def flag_manifest_for_repair(self) -> None:
        """Mark the published manifest so the next sync reads the repair list: drop the listing
        digest that lets a sync skip planning, add REPAIR_META. A copy onto itself, only if the
        manifest is still the one we diffed against (a sync that publishes meanwhile wins)."""
        key = self.layout.manifest_key
        with s3_errors(f"read s3://{self.bucket}/{key}"):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        metadata = dict(head.get("Metadata", {}))
        if metadata.get(REPAIR_META):
            return
        metadata.pop(LISTING_META, None)
        metadata[REPAIR_META] = "1"
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                CopySourceIfMatch=head["ETag"],
                MetadataDirective="REPLACE",
                Metadata=metadata,
                ContentType=head.get("ContentType", "application/gzip"),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") not in ("PreconditionFailed", "412"):
                with s3_errors(f"mark s3://{self.bucket}/{key} for repair"):
                    raise

    def publish(self, path: str, body: bytes, content_type: str) -> None:
        """Put a file of ours (status page) into the served tree, never cached for long."""
        key = self.layout.served_key(path)
        with s3_errors(f"write s3://{self.bucket}/{key}"):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, CacheControl=STATUS_CACHE_CONTROL
            )
