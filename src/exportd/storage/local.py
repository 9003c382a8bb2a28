"""Local storage: finished files under a directory, downloaded through HMAC-signed links.

Publishing is create-only and atomic: the file is copied next to its final path under a hidden
temporary name, flushed to disk, then hard-linked to the final name. ``link`` fails if the name
exists, so a repeated run never overwrites a published file, and a reader never sees a partial
one. Keys are relative paths; anything that could leave the root is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from exportd.contract.errors import FieldError, InvalidInput, NotFound, TransientFailure
from exportd.security.signing import UrlSigner
from exportd.settings import CommonSettings
from exportd.storage.base import Storage, StoredObject

CHUNK_BYTES = 1024 * 1024
KEY_MAX = 1024


def validate_key(key: str) -> PurePosixPath:
    """A key is a relative POSIX path without ``..``, empty parts, NUL or backslashes."""
    path = PurePosixPath(key)
    problem = None
    if not key or len(key) > KEY_MAX:
        problem = "must be 1 to 1024 characters"
    elif "\x00" in key or "\\" in key:
        problem = "must not contain NUL or backslashes"
    elif path.is_absolute() or key.startswith("/"):
        problem = "must be a relative path"
    elif any(part in ("", ".", "..") for part in key.split("/")):
        problem = "must not contain empty, '.' or '..' parts"
    if problem is not None:
        raise InvalidInput(
            f"invalid storage key: {problem}",
            reason="InvalidStorageKey",
            errors=[FieldError("key", problem)],
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class LocalStorage(Storage):
    def __init__(self, root: Path, signer: UrlSigner | Callable[[], UrlSigner]) -> None:
        self.root = root.absolute()
        self._signer = signer

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> LocalStorage:
        root = settings.storage.root or settings.data_dir / "files"
        # Lazily: an exporter only publishes and must not need (or create) the signing key.
        return cls(root, lambda: UrlSigner(settings.secret("signing_key"), settings.public_url))

    @property
    def signer(self) -> UrlSigner:
        if not isinstance(self._signer, UrlSigner):
            self._signer = self._signer()
        return self._signer

    def path_of(self, key: str) -> Path:
        """The file behind ``key`` (for serving it); the key is validated first."""
        return self.root.joinpath(*validate_key(key).parts)

    def publish(
        self, local_path: Path, key: str, *, content_type: str, download_name: str, sha256: str
    ) -> StoredObject:
        final = self.path_of(key)
        if final.exists():
            return self._existing(key, final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if _same_filesystem(local_path, final.parent):
                # The finished file already lies here: a hard link publishes it, no copy.
                _fsync_file(local_path)
                try:
                    os.link(local_path, final)
                except FileExistsError:
                    return self._existing(key, final)
                _fsync_directory(final.parent)
                return StoredObject(key=key, size=final.stat().st_size, sha256=sha256, created=True)
            staged = final.parent / f".{final.name}.{uuid.uuid4().hex}.part"
            try:
                _copy_durably(local_path, staged)
                try:
                    os.link(staged, final)
                except FileExistsError:
                    return self._existing(key, final)
                _fsync_directory(final.parent)
            finally:
                staged.unlink(missing_ok=True)
        except OSError as exc:
            raise TransientFailure(f"local storage failed: {exc}", reason="StorageError") from exc
        return StoredObject(key=key, size=final.stat().st_size, sha256=sha256, created=True)

    def _existing(self, key: str, final: Path) -> StoredObject:
        return StoredObject(
            key=key, size=final.stat().st_size, sha256=file_sha256(final), created=False
        )

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)

    def signed_url(self, key: str, *, expires_in: int, download_name: str) -> tuple[str, int]:
        validate_key(key)
        return self.signer.sign(key, expires_in)

    def open_read(self, key: str) -> Iterator[bytes]:
        path = self.path_of(key)
        if not path.is_file():
            raise NotFound(f"no stored object {key!r}")
        return _chunks(path)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def _same_filesystem(path: Path, directory: Path) -> bool:
    return path.stat().st_dev == directory.stat().st_dev


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_durably(source: Path, target: Path) -> None:
    with source.open("rb") as src, target.open("xb") as dst:
        shutil.copyfileobj(src, dst, CHUNK_BYTES)
        dst.flush()
        os.fsync(dst.fileno())


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
