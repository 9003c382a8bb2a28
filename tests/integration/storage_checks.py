"""What every object store must do, checked the same way for S3 (moto) and GCS (the emulator):
a published file downloads by its signed link with the same bytes and headers, a second
publish to a taken key keeps the first object, a link's lifetime is capped; and a publishing
child process caught in the middle of a large upload.

Each helper asserts the common part and hands back what the store-specific test goes on to
check (the link, its query).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exportd.settings import MAX_LINK_EXPIRY_SECONDS, StorageConfig
from exportd.storage import Storage, StoredObject
from tests.integration.storage_servers import start_publisher, storage_env, wait_for, write_random

CSV = "text/csv; charset=utf-8"
UNICODE_NAME = "Übersicht März.csv"
# RFC 6266: an ASCII fallback with the other letters replaced, and the UTF-8 name.
UNICODE_DISPOSITION = (
    "attachment; filename=\"_bersicht M_rz.csv\"; filename*=UTF-8''%C3%9Cbersicht%20M%C3%A4rz.csv"
)


def download(url: str) -> tuple[bytes, Any]:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - loopback http
        return response.read(), response.headers


def publish_one_byte(storage: Storage, path: Path) -> StoredObject:
    """Writes ``x`` to ``path`` and publishes it at ``k/f.csv`` as ``f.csv``."""
    path.write_bytes(b"x")
    return storage.publish(
        path,
        "k/f.csv",
        content_type=CSV,
        download_name="f.csv",
        sha256=hashlib.sha256(b"x").hexdigest(),
    )


def check_publish_and_download(storage: Storage, tmp_path: Path, size: int) -> str:
    """Publishes ``size`` random bytes as ``Übersicht März.csv`` and checks: the stored object
    has the key, size and SHA-256 given and created=True; a link asked for an hour expires in an
    hour (within a minute) and downloads bytes with the same SHA-256, the CSV content type and
    :data:`UNICODE_DISPOSITION`; open_read gives the same bytes. Returns the link."""
    path = tmp_path / "file.csv"
    sha256 = write_random(path, size)
    key = f"exports/exp-1/{UNICODE_NAME}"
    stored = storage.publish(path, key, content_type=CSV, download_name=UNICODE_NAME, sha256=sha256)
    assert (stored.key, stored.size, stored.sha256, stored.created) == (key, size, sha256, True)
    url, expires = storage.signed_url(key, expires_in=3600, download_name=UNICODE_NAME)
    assert abs(expires - (time.time() + 3600)) < 60
    data, headers = download(url)
    assert hashlib.sha256(data).hexdigest() == sha256
    assert headers["Content-Type"] == CSV
    assert headers["Content-Disposition"] == UNICODE_DISPOSITION
    assert b"".join(storage.open_read(key)) == data
    return url


def check_second_publish_keeps_the_first(
    storage: Storage,
    tmp_path: Path,
    size: int,
    before_second: Callable[[], None] = lambda: None,
) -> None:
    """Publishes two different files of ``size`` bytes to one key (``before_second`` runs in
    between) and checks: the second publish reports the first object (created=False, the
    first's size and SHA-256) and the store still holds the first file's bytes."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    sha_first, sha_second = write_random(first, size), write_random(second, size)
    key = "exports/exp-2/data.csv"
    storage.publish(first, key, content_type=CSV, download_name="data.csv", sha256=sha_first)
    before_second()
    again = storage.publish(
        second, key, content_type=CSV, download_name="data.csv", sha256=sha_second
    )
    assert (again.created, again.size, again.sha256) == (False, size, sha_first)
    assert hashlib.sha256(b"".join(storage.open_read(key))).hexdigest() == sha_first


def thirty_day_link_query(storage: Storage, tmp_path: Path) -> dict[str, list[str]]:
    """Publishes a small file and asks for a 30-day link; checks the link expires no later than
    the 7-day maximum allows. Returns the link's query, whose lifetime parameter the store's
    test checks."""
    publish_one_byte(storage, tmp_path / "f.csv")
    url, expires = storage.signed_url("k/f.csv", expires_in=30 * 86400, download_name="f.csv")
    assert expires <= time.time() + MAX_LINK_EXPIRY_SECONDS + 1
    return parse_qs(urlsplit(url).query)


def upload_in_progress(
    config: StorageConfig,
    tmp_path: Path,
    size: int,
    key: str,
    progressed: Callable[[], bool],
    what: str,
) -> subprocess.Popen[str]:
    """A child process publishing ``size`` random bytes at ``key`` with ``config``, returned
    once ``progressed()`` (``what``: parts or chunks uploaded); it must still be uploading."""
    path = tmp_path / "big.csv"
    sha256 = write_random(path, size)
    child = start_publisher(storage_env(config, tmp_path), path, key, sha256)
    wait_for(lambda: child.poll() is not None or progressed(), what=what)
    assert child.poll() is None, f"the upload finished before it could be stopped ({what})"
    return child
