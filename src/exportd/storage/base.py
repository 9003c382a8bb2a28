"""The storage interface the exporter publishes through and the API links from.

``publish`` takes a complete local file and makes it appear at its final key at once and only
once (create-only): a second exporter run for the same export finds the object there and
reports it instead of writing a second one. Nothing partial is ever visible at a final key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from exportd.settings import CommonSettings


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    created: bool  # False when the object was already there (a repeated run)


class Storage(ABC):
    @abstractmethod
    def publish(
        self, local_path: Path, key: str, *, content_type: str, download_name: str, sha256: str
    ) -> StoredObject:
        """Store a complete file at ``key`` unless an object is already there."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def signed_url(self, key: str, *, expires_in: int, download_name: str) -> tuple[str, int]:
        """A URL that downloads ``key`` until the returned epoch time."""

    @abstractmethod
    def open_read(self, key: str) -> Iterator[bytes]: ...

    def abort_stale_uploads(self, older_than_seconds: int) -> int:
        """Abort incomplete uploads older than that (housekeeping); how many were aborted.

        Backends whose unfinished uploads are invisible and expire by themselves keep this."""
        return 0


def storage_from_settings(settings: CommonSettings) -> Storage:
    if settings.storage.kind == "s3":
        from exportd.storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    if settings.storage.kind == "gcs":
        from exportd.storage.gcs import GcsStorage

        return GcsStorage.from_settings(settings)
    from exportd.storage.local import LocalStorage

    return LocalStorage.from_settings(settings)
