"""GCS storage against gcp-storage-emulator on loopback: publish (simple and resumable), V4
signed links, the create-only precondition on every upload, a 412 from the store, a killed
200 MB resumable upload, error translation.

The emulator does not enforce ``ifGenerationMatch`` (see storage_servers); a test below pins
that down, so the day it does, these tests are due for a stronger race test like the S3 one.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from exportd.errors import PermanentFailure, TransientFailure
from exportd.settings import MAX_LINK_EXPIRY_SECONDS, CommonSettings, StorageConfig
from exportd.storage import storage_from_settings
from exportd.storage.gcs import GcsStorage
from tests.integration.storage_servers import (
    MiB,
    RecordedRequest,
    RecordingProxy,
    ServerProcess,
    free_port,
    start_gcs_emulator,
    start_publisher,
    storage_env,
    wait_for,
    write_random,
    write_service_account,
)

pytestmark = pytest.mark.integration
CSV = "text/csv; charset=utf-8"
BUCKET = "exports-gcs-test"


@pytest.fixture(scope="module")
def emulator() -> Iterator[ServerProcess]:
    server = start_gcs_emulator(BUCKET)
    yield server
    server.stop()


@pytest.fixture
def proxy(emulator: ServerProcess) -> Iterator[RecordingProxy]:
    recording = RecordingProxy(emulator.url).start()
    yield recording
    recording.stop()


def gcs_config(url: str, credentials: Path, **overrides: Any) -> StorageConfig:
    values: dict[str, Any] = {
        "kind": "gcs",
        "bucket": BUCKET,
        "prefix": f"t-{uuid.uuid4().hex[:8]}/",  # one emulator, a fresh namespace per test
        "endpoint_url": url,
        "credentials_file": credentials,
        "anonymous": True,
        "multipart_threshold_bytes": 5 * MiB,
        "part_size_bytes": 5 * MiB,
        "max_attempts": 2,
        "timeout_seconds": 10,
    }
    return StorageConfig.model_validate(values | overrides)


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_service_account(tmp_path_factory.mktemp("gcs") / "service-account.json")


@pytest.fixture
def config(proxy: RecordingProxy, credentials: Path) -> StorageConfig:
    return gcs_config(proxy.url, credentials)


def make_storage(config: StorageConfig, tmp_path: Path) -> GcsStorage:
    built = storage_from_settings(CommonSettings(storage=config, data_dir=tmp_path))
    assert isinstance(built, GcsStorage)
    return built


@pytest.fixture
def storage(config: StorageConfig, tmp_path: Path) -> GcsStorage:
    return make_storage(config, tmp_path)


def download(url: str) -> tuple[bytes, Any]:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - loopback http
        return response.read(), response.headers


def uploads(proxy: RecordingProxy) -> list[RecordedRequest]:
    return [r for r in proxy.requests if r.path.startswith("/upload/")]


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["simple", "resumable"])
def test_published_file_downloads_by_v4_signed_link_with_same_sha256(
    storage: GcsStorage, proxy: RecordingProxy, tmp_path: Path, size: int
) -> None:
    path = tmp_path / "file.csv"
    sha256 = write_random(path, size)
    key = "exports/exp-1/Übersicht März.csv"
    stored = storage.publish(
        path, key, content_type=CSV, download_name="Übersicht März.csv", sha256=sha256
    )
    assert (stored.key, stored.size, stored.sha256, stored.created) == (key, size, sha256, True)
    url, expires = storage.signed_url(key, expires_in=3600, download_name="Übersicht März.csv")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["3600"]
    assert abs(expires - (time.time() + 3600)) < 60
    data, headers = download(url)
    assert hashlib.sha256(data).hexdigest() == sha256
    assert headers["Content-Type"] == CSV
    assert headers["Content-Disposition"] == (
        'attachment; filename="_bersicht M_rz.csv"; '
        "filename*=UTF-8''%C3%9Cbersicht%20M%C3%A4rz.csv"
    )
    assert b"".join(storage.open_read(key)) == data
    kind = "resumable" if size >= 5 * MiB else "multipart"
    [start] = [r for r in uploads(proxy) if r.method == "POST"]
    start_query = parse_qs(urlsplit(start.path).query)
    assert start_query["uploadType"] == [kind]
    assert start_query["ifGenerationMatch"] == ["0"]
    if kind == "resumable":
        assert len([r for r in uploads(proxy) if r.method == "PUT"]) == 3  # 12 MiB / 5 MiB


def test_link_expiry_is_capped_at_seven_days(storage: GcsStorage, tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"x")
    storage.publish(
        path,
        "k/f.csv",
        content_type=CSV,
        download_name="f.csv",
        sha256=hashlib.sha256(b"x").hexdigest(),
    )
    url, expires = storage.signed_url("k/f.csv", expires_in=30 * 86400, download_name="f.csv")
    assert parse_qs(urlsplit(url).query)["X-Goog-Expires"] == [str(MAX_LINK_EXPIRY_SECONDS)]
    assert expires <= time.time() + MAX_LINK_EXPIRY_SECONDS + 1


def test_the_emulator_ignores_if_generation_match(storage: GcsStorage, tmp_path: Path) -> None:
    """A fact about the test double, not about exportd: a second upload with
    ifGenerationMatch=0 overwrites, where GCS answers 412. Create-only on GCS therefore rests on
    the request carrying the condition (asserted above) and the 412 handling (below)."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    for path in (first, second):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        stored = storage.publish(
            path, "k/x.csv", content_type=CSV, download_name="x.csv", sha256=digest
        )
        assert stored.created
    assert b"".join(storage.open_read("k/x.csv")) == b"second"


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["simple", "resumable"])
def test_412_from_the_store_reports_the_existing_object(
    storage: GcsStorage, proxy: RecordingProxy, tmp_path: Path, size: int
) -> None:
    """The first export run stored the file; when the second run's upload is answered
    412 Precondition Failed, publish reports the first object (created=False) and leaves it."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    sha_first, sha_second = write_random(first, size), write_random(second, size)
    key = "exports/exp-2/data.csv"
    storage.publish(first, key, content_type=CSV, download_name="data.csv", sha256=sha_first)
    proxy.refuse = lambda r: r.path.startswith("/upload/") and "ifGenerationMatch=0" in r.path
    again = storage.publish(
        second, key, content_type=CSV, download_name="data.csv", sha256=sha_second
    )
    assert (again.created, again.size, again.sha256) == (False, size, sha_first)
    assert hashlib.sha256(b"".join(storage.open_read(key))).hexdigest() == sha_first


def test_sigkill_during_200mb_resumable_upload_leaves_no_object(
    storage: GcsStorage, config: StorageConfig, proxy: RecordingProxy, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    sha256 = write_random(path, 200 * MiB)
    key = "exports/exp-kill/big.csv"
    child = start_publisher(storage_env(config, tmp_path), path, key, sha256)
    chunks = lambda: len([r for r in uploads(proxy) if r.method == "PUT"])  # noqa: E731
    wait_for(lambda: child.poll() is not None or chunks() >= 2, what="two chunks uploaded")
    assert child.poll() is None, "the upload finished before it could be killed"
    child.kill()
    child.communicate()
    assert not storage.exists(key)
    assert storage.abort_stale_uploads(older_than_seconds=0) == 0  # GCS drops sessions itself


def test_file_not_matching_its_sha256_is_not_published(
    storage: GcsStorage, proxy: RecordingProxy, tmp_path: Path
) -> None:
    path = tmp_path / "f.csv"
    write_random(path, 1000)
    with pytest.raises(PermanentFailure) as caught:
        storage.publish(path, "k/f.csv", content_type=CSV, download_name="f.csv", sha256="0" * 64)
    assert caught.value.reason == "ChecksumMismatch"
    assert uploads(proxy) == []
    assert not storage.exists("k/f.csv")


def test_unreachable_store_is_a_transient_failure(credentials: Path, tmp_path: Path) -> None:
    config = gcs_config(f"http://127.0.0.1:{free_port()}", credentials, timeout_seconds=1)
    storage = make_storage(config, tmp_path)
    path = tmp_path / "f.csv"
    path.write_bytes(b"x")
    with pytest.raises(TransientFailure) as caught:
        storage.publish(
            path,
            "k/f.csv",
            content_type=CSV,
            download_name="f.csv",
            sha256=hashlib.sha256(b"x").hexdigest(),
        )
    assert caught.value.reason == "StorageUnavailable"
