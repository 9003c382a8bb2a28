"""Two real exporter processes (``python -m exportd.exporter``) started together for the same
e-mail export, storing to S3 (moto) and mailing through aiosmtpd (STARTTLS, test CA): one object
at the export's key, one e-mail, and each result line says what its run did."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from exportd.contract.spec import ReturnType, csv_sidecar_key
from exportd.settings import CommonSettings
from exportd.storage.s3 import S3Storage
from tests.conftest import ExporterProcess, SpecFactory, parse_events
from tests.integration.delivery_apps import RECIPIENT, sha256
from tests.integration.server_fixtures import moto_fixture  # noqa: F401
from tests.integration.storage_servers import (
    ServerProcess,
    finish_children,
    fresh_s3_bucket,
    make_pki,
    parse_mail,
    smtp_config,
    smtp_env,
    start_smtp,
    storage_env,
)

pytestmark = pytest.mark.integration


def test_two_exporters_racing_for_one_email_export_store_one_object_and_send_one_email(
    moto: ServerProcess,
    run_exporter_subprocess: ExporterProcess,
    make_export_spec: SpecFactory,
    tmp_path: Path,
) -> None:
    """Both exit 0; exactly one created the object and exactly one sent the e-mail (the other
    reports delivered unknown: another run owns it); the one message carries the stored file."""
    pki = make_pki(tmp_path)
    server = start_smtp(starttls_context=pki.server_context, require_auth=True)
    try:
        storage_config = fresh_s3_bucket(moto.url)
        smtp = smtp_config(server.port, pki, attachment_limit_bytes=64 * 1024)
        run_exporter_subprocess.env |= storage_env(storage_config, tmp_path) | smtp_env(
            smtp, tmp_path
        )
        spec = make_export_spec(
            id=f"exp-{uuid.uuid4().hex[:12]}",
            type="menuCategoriesByMuscle",
            file_name="menus.csv",
            variables={"a": "muscle1", "b": "muscle2"},
            return_type=ReturnType.EMAIL,
            email=RECIPIENT,
        )
        spec_json = spec.model_dump_json(by_alias=True)
        children = [run_exporter_subprocess.start("--spec-json", spec_json) for _ in range(2)]
        results = [parse_events(out)[-1] for out in finish_children(children, timeout=180)]
        messages = list(server.inbox.messages)
    finally:
        server.stop()
    assert [r["event"] for r in results] == ["result", "result"]
    assert sorted(r["created"] for r in results) == [False, True]
    assert [r.get("delivered") for r in results].count(True) == 1
    assert len(messages) == 1
    [attachment] = list(parse_mail(messages[0].content).iter_attachments())
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes) and sha256(payload) == results[0]["sha256"]
    storage = S3Storage.from_settings(CommonSettings(storage=storage_config, data_dir=tmp_path))
    listing = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=f"exports/{spec.id}/")
    keys = sorted(o["Key"] for o in listing.get("Contents", []))
    # The file, its times sidecar (the default CSV layout) and the e-mail claim, once each.
    marker, sidecar = f"exports/{spec.id}/.delivered-email", csv_sidecar_key(spec.object_key)
    assert keys == [marker, spec.object_key, sidecar]
