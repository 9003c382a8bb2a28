"""What the object-store backends (S3, GCS) share: download headers, link expiry, verification.

The headers a browser sees when it follows a link (``Content-Disposition``, ``Content-Type``)
must be the same whichever store serves the file, and a file must be checked against the
SHA-256 the exporter computed before it may appear at its final key. Both live here once.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import quote

from exportd.contract.errors import PermanentFailure
from exportd.contract.spec import format_of
from exportd.settings import MAX_LINK_EXPIRY_SECONDS
from exportd.storage.local import CHUNK_BYTES, validate_key

__all__ = [
    "CHUNK_BYTES",
    "content_disposition",
    "content_type_for",
    "link_seconds",
    "require_sha256",
    "validate_key",
]

_UNSAFE_IN_QUOTED = re.compile(r'[^\x20-\x7e]|["\\%]')


def content_disposition(download_name: str) -> str:
    """``attachment`` with the user's file name, RFC 6266: an ASCII ``filename`` for old
    clients and, when the name is not plain ASCII, the exact name as UTF-8 ``filename*``."""
    fallback = _UNSAFE_IN_QUOTED.sub("_", download_name)
    if fallback == download_name:
        return f'attachment; filename="{download_name}"'
    encoded = quote(download_name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def content_type_for(download_name: str) -> str | None:
    """The Content-Type of an export file by its extension; None for other objects."""
    try:
        return format_of(download_name).content_type
    except ValueError:
        return None


def link_seconds(expires_in: int) -> int:
    """Link lifetime in seconds, at least one and never beyond the clouds' seven-day limit."""
    return max(1, min(int(expires_in), MAX_LINK_EXPIRY_SECONDS))


def require_sha256(local_path: Path, expected: str) -> None:
    """Refuse to publish a file whose bytes are not the ones the exporter hashed."""
    digest = hashlib.sha256()
    with local_path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    if digest.hexdigest() != expected.lower():
        raise PermanentFailure(
            f"{local_path.name}: SHA-256 {digest.hexdigest()} is not the expected {expected}",
            reason="ChecksumMismatch",
        )
