"""GCS storage against gcp-storage-emulator on loopback: publish (simple and resumable), V4
signed links, the create-only precondition on every upload, a 412 from the store, a killed
200 MB resumable upload, error translation.

The emulator does not enforce ``ifGenerationMatch`` (see storage_servers); a test below pins
that down, so the day it does, these tests are due for a stronger race test like the S3 one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from exportd.contract.errors import PermanentFailure, TransientFailure
from exportd.settings import MAX_LINK_EXPIRY_SECONDS, CommonSettings, StorageConfig
from exportd.storage import storage_from_settings
from exportd.storage.gcs import GcsStorage
from tests.integration import storage_servers
from tests.integration.storage_checks import (
    CSV,
    check_publish_and_download,
    check_second_publish_keeps_the_first,
    publish_one_byte,
    thirty_day_link_query,
    upload_in_progress,
)
from tests.integration.storage_servers import (
    MiB,
    RecordedRequest,
    RecordingProxy,
    ServerProcess,
    free_port,
    start_gcs_emulator,
    write_random,
    write_service_account,
)

pytestmark = pytest.mark.integration
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
    return storage_servers.gcs_config(url, BUCKET, credentials, **overrides)


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


def uploads(proxy: RecordingProxy) -> list[RecordedRequest]:
    return [r for r in proxy.requests if r.path.startswith("/upload/")]


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["simple", "resumable"])
def test_published_file_downloads_by_v4_signed_link_with_same_sha256(
    storage: GcsStorage, proxy: RecordingProxy, tmp_path: Path, size: int
) -> None:
    """Published by a simple or a resumable upload, a file downloads by a V4 signed link
    (GOOG4-RSA-SHA256, 3600 s) with the same SHA-256, content type and file name (see
    :func:`check_publish_and_download`); the upload started with the expected upload type and
    ``ifGenerationMatch=0``, a 12 MiB one in three chunks."""
    url = check_publish_and_download(storage, tmp_path, size)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["3600"]
    kind = "resumable" if size >= 5 * MiB else "multipart"
    [start] = [r for r in uploads(proxy) if r.method == "POST"]
    start_query = parse_qs(urlsplit(start.path).query)
    assert start_query["uploadType"] == [kind]
    assert start_query["ifGenerationMatch"] == ["0"]
    if kind == "resumable":
        assert len([r for r in uploads(proxy) if r.method == "PUT"]) == 3  # 12 MiB / 5 MiB


def test_link_expiry_is_capped_at_seven_days(storage: GcsStorage, tmp_path: Path) -> None:
    """A link asked for 30 days is signed for the 7-day maximum (X-Goog-Expires) and expires
    no later than that."""
    query = thirty_day_link_query(storage, tmp_path)
    assert query["X-Goog-Expires"] == [str(MAX_LINK_EXPIRY_SECONDS)]


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

    def refuse_create_only_uploads() -> None:
        proxy.refuse = lambda r: r.path.startswith("/upload/") and "ifGenerationMatch=0" in r.path

    check_second_publish_keeps_the_first(storage, tmp_path, size, refuse_create_only_uploads)


def test_sigkill_during_200mb_resumable_upload_leaves_no_object(
    storage: GcsStorage, config: StorageConfig, proxy: RecordingProxy, tmp_path: Path
) -> None:
    """A publisher killed (SIGKILL) after two chunks of a 200 MB resumable upload leaves no
    object; there is no incomplete upload to abort."""
    key = "exports/exp-kill/big.csv"
    chunks = lambda: len([r for r in uploads(proxy) if r.method == "PUT"])  # noqa: E731
    child = upload_in_progress(config, tmp_path, 200 * MiB, key, lambda: chunks() >= 2, "2 chunks")
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
    """Nothing listens at the endpoint: publish fails with TransientFailure StorageUnavailable."""
    config = gcs_config(f"http://127.0.0.1:{free_port()}", credentials, timeout_seconds=1)
    storage = make_storage(config, tmp_path)
    with pytest.raises(TransientFailure) as caught:
        publish_one_byte(storage, tmp_path / "f.csv")
    assert caught.value.reason == "StorageUnavailable"
