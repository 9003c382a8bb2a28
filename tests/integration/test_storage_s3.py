"""S3 storage against moto in server mode on loopback: publish, presigned links, create-only
publishing (sequential, injected at the exact moment, and two racing processes), killed and
interrupted multipart uploads, error translation."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from mypy_boto3_s3 import S3Client

from exportd.contract.errors import PermanentFailure, TransientFailure
from exportd.settings import MAX_LINK_EXPIRY_SECONDS, CommonSettings, StorageConfig
from exportd.storage import storage_from_settings
from exportd.storage.s3 import S3Storage, make_s3_client
from tests.integration.server_fixtures import moto_fixture, s3_bucket_fixture  # noqa: F401
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
    ServerProcess,
    free_port,
    release_together,
    s3_config,
    start_publisher,
    storage_env,
    write_random,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def storage(s3_bucket: StorageConfig, tmp_path: Path) -> S3Storage:
    built = storage_from_settings(CommonSettings(storage=s3_bucket, data_dir=tmp_path))
    assert isinstance(built, S3Storage)
    return built


def pending_uploads(client: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single-put", "multipart"])
def test_published_file_downloads_by_presigned_link_with_same_sha256(
    storage: S3Storage, tmp_path: Path, size: int
) -> None:
    """Published in one PUT or in parts, a file downloads by a presigned link on the store's
    endpoint with the same SHA-256, content type and file name (see
    :func:`check_publish_and_download`), and no incomplete upload is left."""
    url = check_publish_and_download(storage, tmp_path, size)
    assert url.startswith(storage.client.meta.endpoint_url)
    assert pending_uploads(storage.client, storage.bucket) == []


def test_link_expiry_is_capped_at_seven_days(storage: S3Storage, tmp_path: Path) -> None:
    """A link asked for 30 days is signed for the 7-day maximum (X-Amz-Expires) and expires
    no later than that."""
    query = thirty_day_link_query(storage, tmp_path)
    assert query["X-Amz-Expires"] == [str(MAX_LINK_EXPIRY_SECONDS)]


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single-put", "multipart"])
def test_second_publish_keeps_the_first_object_and_reports_it(
    storage: S3Storage, tmp_path: Path, size: int
) -> None:
    """A second publish to a taken key reports the first object (created=False, its size and
    SHA-256), the first bytes stay, and no incomplete upload is left."""
    check_second_publish_keeps_the_first(storage, tmp_path, size)
    assert pending_uploads(storage.client, storage.bucket) == []


@pytest.mark.parametrize(
    ("size", "operation"),
    [(1000, "PutObject"), (12 * MiB, "CompleteMultipartUpload")],
    ids=["single-put", "multipart"],
)
def test_object_created_just_before_our_write_wins_by_the_store_precondition(
    storage: S3Storage, s3_bucket: StorageConfig, tmp_path: Path, size: int, operation: str
) -> None:
    """Another writer creates the key right before our final request goes out (after our
    existence check): moto's If-None-Match check answers 412, we report created=False, the
    other object stays, and our multipart upload is aborted."""
    rival = make_s3_client(s3_bucket)
    key = "exports/exp-3/data.csv"

    def rival_writes_first(**_: Any) -> None:
        storage.client.meta.events.unregister(f"before-call.s3.{operation}", rival_writes_first)
        rival.put_object(
            Bucket=s3_bucket.bucket or "", Key=key, Body=b"rival", Metadata={"sha256": "r"}
        )

    storage.client.meta.events.register(f"before-call.s3.{operation}", rival_writes_first)
    path = tmp_path / "ours.csv"
    sha256 = write_random(path, size)
    stored = storage.publish(path, key, content_type=CSV, download_name="data.csv", sha256=sha256)
    assert (stored.created, stored.size, stored.sha256) == (False, 5, "r")
    assert b"".join(storage.open_read(key)) == b"rival"
    assert pending_uploads(storage.client, storage.bucket) == []


@pytest.mark.parametrize("size", [MiB, 12 * MiB], ids=["single-put", "multipart"])
def test_two_processes_racing_publish_one_object(
    storage: S3Storage, s3_bucket: StorageConfig, tmp_path: Path, size: int
) -> None:
    """Two exporter processes publish different files to one key at the same moment: one
    creates it, the other reports the winner's object; the stored bytes are the winner's."""
    env = storage_env(s3_bucket, tmp_path)
    go = tmp_path / "go"
    key = "exports/exp-race/race.csv"
    files = [tmp_path / "one.csv", tmp_path / "two.csv"]
    hashes = [write_random(path, size) for path in files]
    children = [start_publisher(env, p, key, h, go) for p, h in zip(files, hashes, strict=True)]
    results = [json.loads(out) for out in release_together(children, go)]
    assert sorted(r["created"] for r in results) == [False, True]
    winner = next(h for h, r in zip(hashes, results, strict=True) if r["created"])
    assert [r["sha256"] for r in results] == [winner, winner]
    assert hashlib.sha256(b"".join(storage.open_read(key))).hexdigest() == winner
    assert pending_uploads(storage.client, storage.bucket) == []


def _parts_uploaded(storage: S3Storage, key: str) -> int:
    uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
    if not uploads:
        return 0
    upload_id = uploads[0]["UploadId"]
    parts = storage.client.list_parts(Bucket=storage.bucket, Key=key, UploadId=upload_id)
    return len(parts.get("Parts", []))


def test_sigkill_during_200mb_multipart_upload_leaves_no_object_and_housekeeping_aborts_it(
    storage: S3Storage, s3_bucket: StorageConfig, tmp_path: Path
) -> None:
    """A publisher killed (SIGKILL) after two parts of a 200 MB upload leaves no object but
    one incomplete upload, which housekeeping's abort_stale_uploads then aborts."""
    key = "exports/exp-kill/big.csv"
    child = upload_in_progress(
        s3_bucket, tmp_path, 200 * MiB, key, lambda: _parts_uploaded(storage, key) >= 2, "2 parts"
    )
    child.kill()
    child.communicate()
    assert not storage.exists(key)
    assert pending_uploads(storage.client, storage.bucket) == [key]
    # moto reports every upload as initiated on 2010-11-10, so the age filter cannot be shown
    # here; an age of zero selects every incomplete upload on any store.
    assert storage.abort_stale_uploads(older_than_seconds=0) == 1
    assert pending_uploads(storage.client, storage.bucket) == []
    assert not storage.exists(key)


def test_interrupt_during_multipart_upload_aborts_it(
    storage: S3Storage, s3_bucket: StorageConfig, tmp_path: Path
) -> None:
    """SIGINT raises KeyboardInterrupt inside the upload: the finally aborts the upload, so
    neither an object nor an incomplete upload remains."""
    key = "exports/exp-int/big.csv"
    child = upload_in_progress(
        s3_bucket, tmp_path, 60 * MiB, key, lambda: _parts_uploaded(storage, key) >= 1, "1 part"
    )
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0 and "KeyboardInterrupt" in err
    assert not storage.exists(key)
    assert pending_uploads(storage.client, storage.bucket) == []


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single-put", "multipart"])
def test_file_not_matching_its_sha256_is_not_published(
    storage: S3Storage, tmp_path: Path, size: int
) -> None:
    path = tmp_path / "f.csv"
    write_random(path, size)
    with pytest.raises(PermanentFailure) as caught:
        storage.publish(path, "k/f.csv", content_type=CSV, download_name="f.csv", sha256="0" * 64)
    assert caught.value.reason == "ChecksumMismatch"
    assert not storage.exists("k/f.csv")
    assert pending_uploads(storage.client, storage.bucket) == []


def test_unreachable_store_is_a_transient_failure_after_bounded_retries(tmp_path: Path) -> None:
    """Nothing listens at the endpoint: publish fails with TransientFailure StorageUnavailable
    (a retry may help)."""
    config = s3_config(f"http://127.0.0.1:{free_port()}", "exports-nowhere")
    storage = S3Storage.from_settings(CommonSettings(storage=config, data_dir=tmp_path))
    with pytest.raises(TransientFailure) as caught:
        publish_one_byte(storage, tmp_path / "f.csv")
    assert caught.value.reason == "StorageUnavailable"


def test_missing_bucket_is_a_permanent_failure(moto: ServerProcess, tmp_path: Path) -> None:
    """The store answers but the bucket does not exist: PermanentFailure StorageRejected."""
    config = s3_config(moto.url, "exports-missing-bucket")
    storage = S3Storage.from_settings(CommonSettings(storage=config, data_dir=tmp_path))
    with pytest.raises(PermanentFailure) as caught:
        publish_one_byte(storage, tmp_path / "f.csv")
    assert caught.value.reason == "StorageRejected"
