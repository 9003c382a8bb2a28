"""Local storage: create-only atomic publish, key validation, signed links."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from exportd.contract.errors import InvalidInput, NotFound
from exportd.security.signing import DOWNLOAD_ROUTE, UrlSigner
from exportd.settings import ExporterSettings
from exportd.storage import storage_from_settings
from exportd.storage.local import LocalStorage

KEY = "exports/exp-1/report.xlsx"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files", UrlSigner("s3cret", "http://files.test"))


def _source(tmp_path: Path, content: bytes) -> tuple[Path, str]:
    path = tmp_path / f"src-{hashlib.sha256(content).hexdigest()[:8]}"
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def _publish(storage: LocalStorage, path: Path, sha: str, key: str = KEY) -> object:
    return storage.publish(
        path, key, content_type="text/csv", download_name="report.xlsx", sha256=sha
    )


def test_publish_stores_the_file_and_leaves_no_staging_file(
    tmp_path: Path, storage: LocalStorage
) -> None:
    path, sha = _source(tmp_path, b"hello")
    stored = storage.publish(
        path, KEY, content_type="text/csv", download_name="report.xlsx", sha256=sha
    )
    assert (stored.key, stored.size, stored.sha256, stored.created) == (KEY, 5, sha, True)
    final = storage.path_of(KEY)
    assert final.read_bytes() == b"hello"
    assert sorted(p.name for p in final.parent.iterdir()) == ["report.xlsx"]
    assert path.exists()  # the caller's file is copied, not moved
    assert storage.exists(KEY)
    assert b"".join(storage.open_read(KEY)) == b"hello"


def test_second_publish_to_the_same_key_is_refused_without_overwriting(
    tmp_path: Path, storage: LocalStorage
) -> None:
    first, first_sha = _source(tmp_path, b"first")
    second, second_sha = _source(tmp_path, b"second run")
    storage.publish(first, KEY, content_type="x", download_name="r", sha256=first_sha)
    again = storage.publish(second, KEY, content_type="x", download_name="r", sha256=second_sha)
    assert again.created is False
    assert (again.size, again.sha256) == (5, first_sha)
    final = storage.path_of(KEY)
    assert final.read_bytes() == b"first"
    assert sorted(p.name for p in final.parent.iterdir()) == ["report.xlsx"]


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "exports/../../x", "/etc/passwd", "a\x00b", "", "a//b", "a/./b", "a\\b"],
)
def test_keys_that_could_escape_the_root_are_rejected(storage: LocalStorage, key: str) -> None:
    with pytest.raises(InvalidInput):
        storage.path_of(key)
    with pytest.raises(InvalidInput):
        storage.exists(key)


def test_signed_url_verifies_with_the_same_key_and_expires(storage: LocalStorage) -> None:
    url, expires = storage.signed_url(KEY, expires_in=3600, download_name="report.xlsx")
    parts = urlsplit(url)
    assert parts.path == f"{DOWNLOAD_ROUTE}/{KEY}"
    query = parse_qs(parts.query)
    assert int(query["expires"][0]) == expires
    signer = UrlSigner("s3cret", "http://files.test")
    assert signer.verify(KEY, expires, query["signature"][0])
    assert not UrlSigner("other", "http://files.test").verify(KEY, expires, query["signature"][0])


def test_delete_and_missing_object(storage: LocalStorage, tmp_path: Path) -> None:
    path, sha = _source(tmp_path, b"bye")
    _publish(storage, path, sha)
    storage.delete(KEY)
    assert not storage.exists(KEY)
    with pytest.raises(NotFound):
        storage.open_read(KEY)


def test_from_settings_roots_files_under_the_data_dir(tmp_path: Path) -> None:
    settings = ExporterSettings(data_dir=tmp_path / "data", signing_key="k" * 32)
    storage = storage_from_settings(settings)
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "data" / "files"
    url, _ = storage.signed_url(KEY, expires_in=60, download_name="r.xlsx")
    assert url.startswith(settings.public_url)


def test_publish_on_the_same_filesystem_links_the_file_instead_of_copying(tmp_path: Path) -> None:
    """The exporter's finished file lies on the storage's filesystem: publishing hard-links it
    (same inode, no second copy), and a second publish of the key still creates nothing."""
    storage = LocalStorage(tmp_path / "files", UrlSigner("s3cret", "http://files.test"))
    source = tmp_path / "export.csv"
    source.write_bytes(b"a,b\r\n")
    stored = storage.publish(
        source, "exports/e/x.csv", content_type="text/csv", download_name="x.csv", sha256="h"
    )
    final = storage.path_of("exports/e/x.csv")
    assert stored.created and final.stat().st_ino == source.stat().st_ino
    again = storage.publish(
        source, "exports/e/x.csv", content_type="text/csv", download_name="x.csv", sha256="h"
    )
    assert not again.created
