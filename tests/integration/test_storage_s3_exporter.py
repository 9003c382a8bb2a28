"""The real exporter (``python -m exportd.exporter``) publishing to S3 (moto): the export lands
at ``exports/<id>/<fileName>`` with its SHA-256, and two exporter processes started for the
same export id leave exactly one object."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exportd.settings import CommonSettings
from exportd.storage.s3 import S3Storage, make_s3_client
from tests.conftest import ExporterProcess, SpecFactory, parse_events
from tests.integration.storage_servers import ServerProcess, s3_config, start_moto, storage_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def moto() -> Iterator[ServerProcess]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture
def storage(moto: ServerProcess, tmp_path: Path) -> S3Storage:
    bucket = f"exports-{uuid.uuid4().hex[:12]}"
    config = s3_config(moto.url, bucket)
    make_s3_client(config).create_bucket(Bucket=bucket)
    return S3Storage.from_settings(CommonSettings(storage=config, data_dir=tmp_path))


def test_two_exporters_for_one_export_store_one_object(
    storage: S3Storage,
    run_exporter_subprocess: ExporterProcess,
    make_export_spec: SpecFactory,
    tmp_path: Path,
) -> None:
    config = s3_config(storage.client.meta.endpoint_url, storage.bucket)
    run_exporter_subprocess.env |= storage_env(config, tmp_path)
    spec = make_export_spec(file_name="users.csv", id=f"exp-{uuid.uuid4().hex[:12]}")
    spec_json = spec.model_dump_json(by_alias=True)
    children = [run_exporter_subprocess.start("--spec-json", spec_json) for _ in range(2)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
        results.append(parse_events(out)[-1])
    assert [r["event"] for r in results] == ["result", "result"]
    assert sorted(r["created"] for r in results) == [False, True]
    assert {r["objectKey"] for r in results} == {spec.object_key}
    assert len({r["sha256"] for r in results}) == 1
    stored = b"".join(storage.open_read(spec.object_key))
    assert hashlib.sha256(stored).hexdigest() == results[0]["sha256"]
    listing = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=f"exports/{spec.id}/")
    assert [o["Key"] for o in listing.get("Contents", [])] == [spec.object_key]
