"""S3 and S3-compatible stores (boto3): create-only publishing and presigned download links.

Why each step is as it is:

- Create-only: ``PutObject`` and ``CompleteMultipartUpload`` carry ``If-None-Match: *``, so
  of two exporters racing for one export the store keeps the first object and answers the
  second with 412, which :meth:`S3Storage.publish` reports as ``created=False``. A large file
  that is already there is found by a HEAD first, so a rerun does not upload it again; that
  HEAD only saves work, the guarantee is the condition.
- Nothing partial at the final key: a single PUT is atomic, and a multipart upload becomes an
  object only at ``CompleteMultipartUpload``, which is sent after every part went up and the
  bytes sent hashed to the SHA-256 the exporter computed. Any failure before that, an
  exception, ``KeyboardInterrupt`` or the exception a SIGTERM handler raises, aborts the
  upload in a ``finally``. A SIGKILL leaves an invisible incomplete upload, which
  :meth:`S3Storage.abort_stale_uploads` (housekeeping) or a bucket lifecycle rule
  (``AbortIncompleteMultipartUpload``) removes.
- Transient errors (5xx, throttling, timeouts, refused connections) are retried by botocore's
  ``standard`` retry mode with exponential backoff, ``storage.max_attempts`` times; what still
  fails becomes :class:`~exportd.contract.errors.TransientFailure`, a refusal (403, missing bucket,
  bad
  request) :class:`~exportd.contract.errors.PermanentFailure`.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from exportd.contract.errors import ExportdError, NotFound, PermanentFailure, TransientFailure
from exportd.settings import CommonSettings, StorageConfig
from exportd.storage.base import Storage, StoredObject
from exportd.storage.cloud import (
    CHUNK_BYTES,
    content_disposition,
    content_type_for,
    link_seconds,
    require_sha256,
    validate_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

SHA256_METADATA = "sha256"
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "ConditionalRequestConflict",
    }
)


def make_s3_client(config: StorageConfig) -> S3Client:
    """A client from settings; credentials fall back to boto3's standard chain."""
    secret = config.resolved_secret_access_key()
    return boto3.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=secret,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": config.addressing_style},
            retries={"max_attempts": config.max_attempts, "mode": "standard"},
            connect_timeout=config.timeout_seconds,
            read_timeout=config.timeout_seconds,
        ),
    )


class S3Storage(Storage):
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        prefix: str = "",
        multipart_threshold: int = 64 * 1024 * 1024,
        part_size: int = 16 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> S3Storage:
        config = settings.storage
        assert config.bucket is not None  # StorageConfig refuses a cloud kind without one
        return cls(
            make_s3_client(config),
            config.bucket,
            prefix=config.prefix,
            multipart_threshold=config.multipart_threshold_bytes,
            part_size=config.part_size_bytes,
        )

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}{key}"

    def publish(
        self, local_path: Path, key: str, *, content_type: str, download_name: str, sha256: str
    ) -> StoredObject:
        name = self._name(key)
        size = local_path.stat().st_size
        headers: dict[str, Any] = {
            "ContentType": content_type,
            "ContentDisposition": content_disposition(download_name),
            "Metadata": {SHA256_METADATA: sha256},
        }
        with _s3_errors("publish", key):
            if size < self.multipart_threshold:
                created = self._put_single(local_path, name, sha256, headers)
            elif self._head(name) is not None:
                created = False
            else:
                created = self._put_multipart(local_path, name, sha256, headers)
            if not created:
                return self._existing(key, name)
        return StoredObject(key=key, size=size, sha256=sha256, created=True)

    def _put_single(
        self, local_path: Path, name: str, sha256: str, headers: dict[str, Any]
    ) -> bool:
        require_sha256(local_path, sha256)
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        with local_path.open("rb") as body:
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=body,
                    ChecksumSHA256=checksum,
                    IfNoneMatch="*",
                    **headers,
                )
            except ClientError as exc:
                if _precondition_failed(exc):
                    return False
                raise
        return True

    def _put_multipart(
        self, local_path: Path, name: str, sha256: str, headers: dict[str, Any]
    ) -> bool:
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=name, **headers)[
            "UploadId"
        ]
        completed = False
        try:
            parts, sent_sha256 = self._upload_parts(local_path, name, upload_id)
            if sent_sha256 != sha256.lower():
                raise PermanentFailure(
                    f"uploaded bytes hash to {sent_sha256}, expected {sha256}",
                    reason="ChecksumMismatch",
                )
            try:
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if _precondition_failed(exc):
                    return False
                raise
            completed = True
        finally:
            if not completed:
                self._abort_quietly(name, upload_id)
        return True

    def _upload_parts(
        self, local_path: Path, name: str, upload_id: str
    ) -> tuple[list[CompletedPartTypeDef], str]:
        digest = hashlib.sha256()
        parts: list[CompletedPartTypeDef] = []
        with local_path.open("rb") as handle:
            while chunk := handle.read(self.part_size):
                digest.update(chunk)
                number = len(parts) + 1
                answer = self.client.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
        return parts, digest.hexdigest()

    def _abort_quietly(self, name: str, upload_id: str) -> None:
        # Best effort on the way out of a failure: the original error is the one to report, and
        # abort_stale_uploads catches what this misses.
        with suppress(ClientError, BotoCoreError):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)

    def _head(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=name))
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise

    def _existing(self, key: str, name: str) -> StoredObject:
        head = self._head(name)
        if head is None:
            # 412 then gone: deleted in between; the caller's retry will publish again.
            raise TransientFailure(f"{key} vanished after a conflict", reason="StorageConflict")
        sha256 = head.get("Metadata", {}).get(SHA256_METADATA, "")
        return StoredObject(key=key, size=int(head["ContentLength"]), sha256=sha256, created=False)

    def exists(self, key: str) -> bool:
        with _s3_errors("exists", key):
            return self._head(self._name(key)) is not None

    def delete(self, key: str) -> None:
        with _s3_errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def signed_url(self, key: str, *, expires_in: int, download_name: str) -> tuple[str, int]:
        seconds = link_seconds(expires_in)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._name(key),
            "ResponseContentDisposition": content_disposition(download_name),
        }
        if (content_type := content_type_for(download_name)) is not None:
            params["ResponseContentType"] = content_type
        expires = int(time.time()) + seconds
        with _s3_errors("sign", key):
            url = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
        return url, expires

    def open_read(self, key: str) -> Iterator[bytes]:
        name = self._name(key)
        with _s3_errors("read", key):
            body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
        return _chunks(body, key)

    def abort_stale_uploads(self, older_than_seconds: int) -> int:
        cutoff = datetime.fromtimestamp(time.time() - older_than_seconds, UTC)
        aborted = 0
        with _s3_errors("abort stale uploads", self.prefix or "/"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] <= cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
        return aborted


def _chunks(body: Any, key: str) -> Iterator[bytes]:
    with _s3_errors("read", key):
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _precondition_failed(exc: ClientError) -> bool:
    return _status(exc) == 412 or exc.response.get("Error", {}).get("Code") == "PreconditionFailed"


@contextmanager
def _s3_errors(action: str, key: str) -> Iterator[None]:
    """SDK errors -> the exportd taxonomy, with the S3 error code in the message."""
    try:
        yield
    except ExportdError:
        raise
    except NoCredentialsError as exc:
        raise PermanentFailure(f"S3 {action} {key}: {exc}", reason="StorageCredentials") from exc
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = _status(exc)
        message = f"S3 {action} {key}: {code or status}"
        if status == 404 and code in {"NoSuchKey", "404"}:
            raise NotFound(message, reason="ObjectNotFound") from exc
        if status >= 500 or status in {408, 409, 429} or code in _TRANSIENT_CODES:
            raise TransientFailure(message, reason="StorageUnavailable") from exc
        raise PermanentFailure(message, reason="StorageRejected") from exc
    except BotoCoreError as exc:
        raise TransientFailure(f"S3 {action} {key}: {exc}", reason="StorageUnavailable") from exc
