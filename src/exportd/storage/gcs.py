"""Google Cloud Storage (``google-cloud-storage``): create-only uploads and V4 signed links.

Why each step is as it is:

- Create-only: every upload carries ``ifGenerationMatch=0`` ("only if no live object has this
  name"), so of two exporters racing for one export GCS keeps the first and answers the second
  with 412, reported as ``created=False``. For a resumable upload GCS checks the condition when
  the session starts, so a rerun does not upload the file again.
- Nothing partial at the final key: files from ``storage.multipart_threshold_bytes`` on go up as a
  resumable upload in ``part_size_bytes`` chunks; the object exists only after the last chunk,
  whose CRC32C the SDK checks. A killed upload leaves an invisible session that GCS drops after
  a week, so there is nothing for housekeeping to abort. The file is hashed before upload and
  refused if it is not the SHA-256 the exporter recorded.
- Links: V4 signed URLs (seven days at most), signed with the service-account key of
  ``storage.credentials_file``, or through the IAM signBlob API with Application Default
  Credentials (Workload Identity), which hold no key.
- Transient errors (429, 5xx, connection errors) are retried by the SDK with exponential backoff
  for at most ``max_attempts`` x ``timeout_seconds``; what still fails becomes
  :class:`~exportd.contract.errors.TransientFailure`, a refusal
  :class:`~exportd.contract.errors.PermanentFailure`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import google.auth
import google.auth.transport.requests
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials, Credentials, Signing
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

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

SHA256_METADATA = "sha256"
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
_CHUNK_MULTIPLE = 256 * 1024  # resumable chunks must be multiples of 256 KiB
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def make_gcs_client(config: StorageConfig) -> tuple[gcs.Client, Credentials | None]:
    """The client and the credentials that sign links (None: Application Default Credentials)."""
    signer: Credentials | None = None
    project = config.project
    if config.credentials_file is not None:
        key = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            str(config.credentials_file), scopes=SCOPES
        )
        signer, project = key, project or key.project_id
    credentials = AnonymousCredentials() if config.anonymous else signer  # type: ignore[no-untyped-call]
    if config.anonymous and project is None:
        project = "anonymous"  # an emulator needs none; this stops the SDK probing for one
    options = {"api_endpoint": config.endpoint_url} if config.endpoint_url else None
    client = gcs.Client(project=project, credentials=credentials, client_options=options)
    return client, signer


class GcsStorage(Storage):
    def __init__(
        self,
        client: gcs.Client,
        bucket: str,
        *,
        signer: Credentials | None = None,
        prefix: str = "",
        endpoint_url: str | None = None,
        multipart_threshold: int = 64 * 1024 * 1024,
        part_size: int = 16 * 1024 * 1024,
        retry_seconds: float = 300.0,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.client = client
        self.bucket = client.bucket(bucket)
        self.signer = signer
        self.prefix = prefix
        self.endpoint_url = endpoint_url or DEFAULT_ENDPOINT
        self.multipart_threshold = multipart_threshold
        self.chunk_size = max(_CHUNK_MULTIPLE, part_size - part_size % _CHUNK_MULTIPLE)
        self.retry = DEFAULT_RETRY.with_delay(initial=0.5, maximum=8.0).with_timeout(retry_seconds)
        self.timeout = timeout_seconds

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> GcsStorage:
        config = settings.storage
        assert config.bucket is not None  # StorageConfig refuses a cloud kind without one
        client, signer = make_gcs_client(config)
        return cls(
            client,
            config.bucket,
            signer=signer,
            prefix=config.prefix,
            endpoint_url=config.endpoint_url,
            multipart_threshold=config.multipart_threshold_bytes,
            part_size=config.part_size_bytes,
            retry_seconds=config.max_attempts * config.timeout_seconds,
            timeout_seconds=config.timeout_seconds,
        )

    def _blob(self, key: str, *, chunked: bool = False) -> gcs.Blob:
        validate_key(key)
        chunk_size = self.chunk_size if chunked else None
        return self.bucket.blob(f"{self.prefix}{key}", chunk_size=chunk_size)

    def publish(
        self, local_path: Path, key: str, *, content_type: str, download_name: str, sha256: str
    ) -> StoredObject:
        size = local_path.stat().st_size
        blob = self._blob(key, chunked=size >= self.multipart_threshold)
        blob.content_type = content_type
        blob.content_disposition = content_disposition(download_name)
        blob.metadata = {SHA256_METADATA: sha256}
        with _gcs_errors("publish", key):
            require_sha256(local_path, sha256)
            try:
                blob.upload_from_filename(
                    str(local_path),
                    content_type=content_type,
                    if_generation_match=0,
                    checksum="crc32c",
                    retry=self.retry,
                    timeout=self.timeout,
                )
            except gexc.PreconditionFailed:
                return self._existing(key)
        return StoredObject(key=key, size=size, sha256=sha256, created=True)

    def _existing(self, key: str) -> StoredObject:
        blob = self.bucket.get_blob(self._blob(key).name, retry=self.retry, timeout=self.timeout)
        if blob is None:
            raise TransientFailure(f"{key} vanished after a conflict", reason="StorageConflict")
        sha256 = (blob.metadata or {}).get(SHA256_METADATA, "")
        return StoredObject(key=key, size=int(blob.size or 0), sha256=sha256, created=False)

    def exists(self, key: str) -> bool:
        with _gcs_errors("exists", key):
            return bool(self._blob(key).exists(retry=self.retry, timeout=self.timeout))

    def delete(self, key: str) -> None:
        with _gcs_errors("delete", key), suppress(gexc.NotFound):
            self._blob(key).delete(retry=self.retry, timeout=self.timeout)

    def signed_url(self, key: str, *, expires_in: int, download_name: str) -> tuple[str, int]:
        seconds = link_seconds(expires_in)
        blob = self._blob(key)
        expires = int(time.time()) + seconds  # the URL's own clock starts a moment later
        with _gcs_errors("sign", key):
            url = blob.generate_signed_url(
                version="v4",
                expiration=timedelta(seconds=seconds),
                method="GET",
                api_access_endpoint=self.endpoint_url,
                response_disposition=content_disposition(download_name),
                response_type=content_type_for(download_name),
                **self._signing_arguments(),
            )
        return url, expires

    def _signing_arguments(self) -> dict[str, Any]:
        if isinstance(self.signer, Signing):
            return {"credentials": self.signer}
        # Keyless credentials (GKE Workload Identity, Compute Engine): sign through IAM.
        credentials, _ = google.auth.default(scopes=SCOPES)
        credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
        return {
            "service_account_email": getattr(credentials, "service_account_email", None),
            "access_token": credentials.token,
        }

    def open_read(self, key: str) -> Iterator[bytes]:
        blob = self._blob(key)
        with _gcs_errors("read", key):
            reader = blob.open("rb", chunk_size=CHUNK_BYTES, retry=self.retry)
        return _chunks(reader, key)


def _chunks(reader: Any, key: str) -> Iterator[bytes]:
    with _gcs_errors("read", key), reader:
        while chunk := reader.read(CHUNK_BYTES):
            yield chunk


@contextmanager
def _gcs_errors(action: str, key: str) -> Iterator[None]:
    """SDK errors -> the exportd taxonomy, with the HTTP status in the message."""
    try:
        yield
    except ExportdError:
        raise
    except gexc.NotFound as exc:
        raise NotFound(f"GCS {action} {key}: {exc.message}", reason="ObjectNotFound") from exc
    except gexc.GoogleAPICallError as exc:
        message = f"GCS {action} {key}: {exc.code} {exc.message}"
        if exc.code in _TRANSIENT_STATUS:
            raise TransientFailure(message, reason="StorageUnavailable") from exc
        raise PermanentFailure(message, reason="StorageRejected") from exc
    except (
        gexc.RetryError,
        requests.RequestException,
        google.auth.exceptions.TransportError,
    ) as exc:
        raise TransientFailure(f"GCS {action} {key}: {exc}", reason="StorageUnavailable") from exc
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise PermanentFailure(f"GCS {action} {key}: {exc}", reason="StorageCredentials") from exc
