"""S3 storage against moto in server mode on loopback: publish, presigned links, create-only
publishing (sequential, injected at the exact moment, and two racing processes), killed and
interrupted multipart uploads, error translation."""

from __future__ import annotations

import hashlib
import json
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from mypy_boto3_s3 import S3Client

from exportd.errors import PermanentFailure, TransientFailure
from exportd.settings import MAX_LINK_EXPIRY_SECONDS, CommonSettings, StorageConfig
from exportd.storage import storage_from_settings
from exportd.storage.s3 import S3Storage, make_s3_client
from tests.integration.storage_servers import (
    MiB,
    ServerProcess,
    free_port,
    s3_config,
    start_moto,
    start_publisher,
    storage_env,
    wait_for,
    write_random,
)

pytestmark = pytest.mark.integration
CSV = "text/csv; charset=utf-8"


@pytest.fixture(scope="module")
def moto() -> Iterator[ServerProcess]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture
def config(moto: ServerProcess) -> StorageConfig:
    bucket = f"exports-{uuid.uuid4().hex[:12]}"
    make_s3_client(s3_config(moto.url, bucket)).create_bucket(Bucket=bucket)
    return s3_config(moto.url, bucket)


@pytest.fixture
def storage(config: StorageConfig, tmp_path: Path) -> S3Storage:
    built = storage_from_settings(CommonSettings(storage=config, data_dir=tmp_path))
    assert isinstance(built, S3Storage)
    return built


def download(url: str) -> tuple[bytes, Any]:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - loopback http
        return response.read(), response.headers


def pending_uploads(client: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single-put", "multipart"])
def test_published_file_downloads_by_presigned_link_with_same_sha256(
    storage: S3Storage, tmp_path: Path, size: int
) -> None:
    path = tmp_path / "file.csv"
    sha256 = write_random(path, size)
    key = "exports/exp-1/Übersicht März.csv"
    stored = storage.publish(
        path, key, content_type=CSV, download_name="Übersicht März.csv", sha256=sha256
    )
    assert (stored.key, stored.size, stored.sha256, stored.created) == (key, size, sha256, True)
    url, expires = storage.signed_url(key, expires_in=3600, download_name="Übersicht März.csv")
    assert url.startswith(storage.client.meta.endpoint_url)
    assert abs(expires - (time.time() + 3600)) < 60
    data, headers = download(url)
    assert hashlib.sha256(data).hexdigest() == sha256
    assert headers["Content-Type"] == CSV
    assert headers["Content-Disposition"] == (
        'attachment; filename="_bersicht M_rz.csv"; '
        "filename*=UTF-8''%C3%9Cbersicht%20M%C3%A4rz.csv"
    )
    assert b"".join(storage.open_read(key)) == data
    assert pending_uploads(storage.client, storage.bucket) == []


def test_link_expiry_is_capped_at_seven_days(storage: S3Storage, tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    storage.publish(
        path_with(path, b"x"),
        "k/f.csv",
        content_type=CSV,
        download_name="f.csv",
        sha256=hashlib.sha256(b"x").hexdigest(),
    )
    url, expires = storage.signed_url("k/f.csv", expires_in=30 * 86400, download_name="f.csv")
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(MAX_LINK_EXPIRY_SECONDS)]
    assert expires <= time.time() + MAX_LINK_EXPIRY_SECONDS + 1


def path_with(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single-put", "multipart"])
def test_second_publish_keeps_the_first_object_and_reports_it(
    storage: S3Storage, tmp_path: Path, size: int
) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    sha_first, sha_second = write_random(first, size), write_random(second, size)
    key = "exports/exp-2/data.csv"
    storage.publish(first, key, content_type=CSV, download_name="data.csv", sha256=sha_first)
    again = storage.publish(
        second, key, content_type=CSV, download_name="data.csv", sha256=sha_second
    )
    assert (again.created, again.size, again.sha256) == (False, size, sha_first)
    assert hashlib.sha256(b"".join(storage.open_read(key))).hexdigest() == sha_first
    assert pending_uploads(storage.client, storage.bucket) == []


@pytest.mark.parametrize(
    ("size", "operation"),
    [(1000, "PutObject"), (12 * MiB, "CompleteMultipartUpload")],
    ids=["single-put", "multipart"],
)
def test_object_created_just_before_our_write_wins_by_the_store_precondition(
    storage: S3Storage, config: StorageConfig, tmp_path: Path, size: int, operation: str
) -> None:
    """Another writer creates the key right before our final request goes out (after our
    existence check): moto's If-None-Match check answers 412, we report created=False, the
    other object stays, and our multipart upload is aborted."""
    rival = make_s3_client(config)
    key = "exports/exp-3/data.csv"

    def rival_writes_first(**_: Any) -> None:
        storage.client.meta.events.unregister(f"before-call.s3.{operation}", rival_writes_first)
        rival.put_object(
            Bucket=config.bucket or "", Key=key, Body=b"rival", Metadata={"sha256": "r"}
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
    storage: S3Storage, config: StorageConfig, tmp_path: Path, size: int
) -> None:
    """Two exporter processes publish different files to one key at the same moment: one
    creates it, the other reports the winner's object; the stored bytes are the winner's."""
    env = storage_env(config, tmp_path)
    go = tmp_path / "go"
    key = "exports/exp-race/race.csv"
    files = [tmp_path / "one.csv", tmp_path / "two.csv"]
    hashes = [write_random(path, size) for path in files]
    children = [start_publisher(env, p, key, h, go) for p, h in zip(files, hashes, strict=True)]
    time.sleep(0.1)  # both started (not a timing assertion: a late child only loses earlier)
    go.touch()
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out))
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
    storage: S3Storage, config: StorageConfig, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    sha256 = write_random(path, 200 * MiB)
    key = "exports/exp-kill/big.csv"
    child = start_publisher(storage_env(config, tmp_path), path, key, sha256)
    wait_for(
        lambda: child.poll() is not None or _parts_uploaded(storage, key) >= 2,
        what="two parts uploaded",
    )
    assert child.poll() is None, "the upload finished before it could be killed"
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
    storage: S3Storage, config: StorageConfig, tmp_path: Path
) -> None:
    """SIGINT raises KeyboardInterrupt inside the upload: the finally aborts the upload, so
    neither an object nor an incomplete upload remains."""
    path = tmp_path / "big.csv"
    sha256 = write_random(path, 60 * MiB)
    key = "exports/exp-int/big.csv"
    child = start_publisher(storage_env(config, tmp_path), path, key, sha256)
    wait_for(
        lambda: child.poll() is not None or _parts_uploaded(storage, key) >= 1,
        what="one part uploaded",
    )
    assert child.poll() is None, "the upload finished before it could be interrupted"
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
    config = s3_config(f"http://127.0.0.1:{free_port()}", "exports-nowhere")
    storage = S3Storage.from_settings(CommonSettings(storage=config, data_dir=tmp_path))
    with pytest.raises(TransientFailure) as caught:
        storage.publish(
            path_with(tmp_path / "f.csv", b"x"),
            "k/f.csv",
            content_type=CSV,
            download_name="f.csv",
            sha256=hashlib.sha256(b"x").hexdigest(),
        )
    assert caught.value.reason == "StorageUnavailable"


def test_missing_bucket_is_a_permanent_failure(moto: ServerProcess, tmp_path: Path) -> None:
    config = s3_config(moto.url, "exports-missing-bucket")
    storage = S3Storage.from_settings(CommonSettings(storage=config, data_dir=tmp_path))
    with pytest.raises(PermanentFailure) as caught:
        storage.publish(
            path_with(tmp_path / "f.csv", b"x"),
            "k/f.csv",
            content_type=CSV,
            download_name="f.csv",
            sha256=hashlib.sha256(b"x").hexdigest(),
        )
    assert caught.value.reason == "StorageRejected"
