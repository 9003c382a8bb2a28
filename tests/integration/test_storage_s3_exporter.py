"""The real exporter (``python -m exportd.exporter``) publishing to S3 (moto): the export lands
at ``exports/<id>/<fileName>`` with its SHA-256, and two exporter processes started for the
same export id leave exactly one object."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from exportd.contract.spec import csv_sidecar_key
from exportd.settings import CommonSettings, StorageConfig
from exportd.storage.s3 import S3Storage
from tests.conftest import ExporterProcess, SpecFactory, parse_events
from tests.integration.server_fixtures import moto_fixture, s3_bucket_fixture  # noqa: F401
from tests.integration.storage_servers import finish_children, storage_env

pytestmark = pytest.mark.integration


def test_two_exporters_for_one_export_store_one_object(
    s3_bucket: StorageConfig,
    run_exporter_subprocess: ExporterProcess,
    make_export_spec: SpecFactory,
    tmp_path: Path,
) -> None:
    """Two exporter processes for one export id, both exit 0: one created the object, both
    report its key and one SHA-256, the stored bytes have it, and the export's prefix holds
    exactly that one object and its times sidecar."""
    storage = S3Storage.from_settings(CommonSettings(storage=s3_bucket, data_dir=tmp_path))
    run_exporter_subprocess.env |= storage_env(s3_bucket, tmp_path)
    spec = make_export_spec(file_name="users.csv", id=f"exp-{uuid.uuid4().hex[:12]}")
    spec_json = spec.model_dump_json(by_alias=True)
    children = [run_exporter_subprocess.start("--spec-json", spec_json) for _ in range(2)]
    results = [parse_events(out)[-1] for out in finish_children(children, timeout=180)]
    assert [r["event"] for r in results] == ["result", "result"]
    assert sorted(r["created"] for r in results) == [False, True]
    assert {r["objectKey"] for r in results} == {spec.object_key}
    assert len({r["sha256"] for r in results}) == 1
    stored = b"".join(storage.open_read(spec.object_key))
    assert hashlib.sha256(stored).hexdigest() == results[0]["sha256"]
    listing = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=f"exports/{spec.id}/")
    # The file and its times sidecar (the default CSV layout), each once.
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert keys == [spec.object_key, csv_sidecar_key(spec.object_key)]
