"""Delivering exports by e-mail end to end: S3 storage on moto, SMTP (STARTTLS, test CA, login)
on aiosmtpd. Attachment or link by size, one e-mail per export even when two processes race,
the claim released on a failure before sending and kept when the outcome is unknown."""

from __future__ import annotations

import dataclasses
import email
import hashlib
import json
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from exportd import mail
from exportd.delivery import DeliveryOutcome, deliver, marker_key
from exportd.errors import TransientFailure
from exportd.settings import CommonSettings, SmtpConfig, StorageConfig
from exportd.spec import ExportFormat, ExportSpec, ReturnType
from exportd.storage import StoredObject
from exportd.storage.s3 import S3Storage, make_s3_client
from tests.integration.storage_servers import (
    SMTP_PASSWORD,
    SMTP_USER,
    DroppingInbox,
    Pki,
    ServerProcess,
    SmtpServer,
    free_port,
    make_pki,
    s3_config,
    smtp_env,
    start_deliverer,
    start_moto,
    start_smtp,
    storage_env,
    write_random,
)

pytestmark = pytest.mark.integration
RECIPIENT = "alice@example.com"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def moto() -> Iterator[ServerProcess]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def smtp(pki: Pki) -> Iterator[SmtpServer]:
    server = start_smtp(starttls_context=pki.server_context, require_auth=True)
    yield server
    server.stop()


@pytest.fixture
def storage_config(moto: ServerProcess) -> StorageConfig:
    bucket = f"exports-{uuid.uuid4().hex[:12]}"
    make_s3_client(s3_config(moto.url, bucket)).create_bucket(Bucket=bucket)
    return s3_config(moto.url, bucket)


def smtp_config(port: int, pki: Pki, **overrides: Any) -> SmtpConfig:
    values: dict[str, Any] = {
        "host": "localhost",
        "port": port,
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "sender": "exports@example.org",
        "ca_file": pki.ca_file,
        "attachment_limit_bytes": LIMIT,
        "timeout_seconds": 10,
        "max_attempts": 2,
    }
    return SmtpConfig.model_validate(values | overrides)


def make_settings(
    storage_config: StorageConfig, smtp: SmtpConfig, tmp_path: Path
) -> CommonSettings:
    return CommonSettings(storage=storage_config, smtp=smtp, data_dir=tmp_path / "data")


def email_spec(file_name: str = "Bericht März.csv") -> ExportSpec:
    return ExportSpec(
        id=f"exp-{uuid.uuid4().hex[:12]}",
        type="userExport",
        format=ExportFormat.CSV,
        return_type=ReturnType.EMAIL,
        file_name=file_name,
        email=RECIPIENT,
        requested_by="alice",
        requested_at=datetime.now(UTC),
    )


def publish(storage: S3Storage, spec: ExportSpec, tmp_path: Path, size: int) -> StoredObject:
    path = tmp_path / f"export-{size}.csv"
    sha256 = write_random(path, size)
    return storage.publish(
        path,
        spec.object_key,
        content_type=spec.format.content_type,
        download_name=spec.file_name,
        sha256=sha256,
    )


def parse(content: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_small_export_arrives_attached(
    smtp: SmtpServer, pki: Pki, storage_config: StorageConfig, tmp_path: Path
) -> None:
    settings = make_settings(storage_config, smtp_config(smtp.port, pki), tmp_path)
    storage = S3Storage.from_settings(settings)
    spec = email_spec()
    stored = publish(storage, spec, tmp_path, 20_000)
    outcome = deliver(spec, stored, storage, settings)
    assert (outcome.delivered, outcome.reason, outcome.method) == (True, "Sent", "attachment")
    assert outcome.condition()["status"] == "True"
    [received] = smtp.inbox.messages
    assert len(received.content) <= LIMIT
    message = parse(received.content)
    assert message["Subject"] == "Your export Bericht März.csv is ready"
    [part] = list(message.iter_attachments())
    assert part.get_filename() == "Bericht März.csv"
    assert hashlib.sha256(part.get_payload(decode=True)).hexdigest() == stored.sha256
    assert storage.exists(marker_key(spec))


def test_export_over_the_limit_arrives_as_a_link_that_downloads_it(
    smtp: SmtpServer, pki: Pki, storage_config: StorageConfig, tmp_path: Path
) -> None:
    """48 KiB fits the 64 KiB limit raw, but not base64-encoded with headers: a link."""
    settings = make_settings(storage_config, smtp_config(smtp.port, pki), tmp_path)
    storage = S3Storage.from_settings(settings)
    spec = email_spec()
    stored = publish(storage, spec, tmp_path, 48 * 1024)
    outcome = deliver(spec, stored, storage, settings)
    assert (outcome.delivered, outcome.method) == (True, "link")
    assert outcome.link_expires_at is not None
    assert abs(outcome.link_expires_at.timestamp() - time.time() - 24 * 3600) < 60
    [received] = smtp.inbox.messages
    message = parse(received.content)
    assert list(message.iter_attachments()) == []
    body = message.get_body(("plain",))
    assert body is not None
    [url] = re.findall(r"http://\S+", body.get_content())
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback http
        assert hashlib.sha256(response.read()).hexdigest() == stored.sha256


def test_a_second_delivery_of_the_same_export_sends_nothing(
    smtp: SmtpServer, pki: Pki, storage_config: StorageConfig, tmp_path: Path
) -> None:
    settings = make_settings(storage_config, smtp_config(smtp.port, pki), tmp_path)
    storage = S3Storage.from_settings(settings)
    spec = email_spec()
    stored = publish(storage, spec, tmp_path, 1000)
    assert deliver(spec, stored, storage, settings).delivered is True
    again = deliver(spec, stored, storage, settings)
    assert (again.delivered, again.reason) == (None, "AlreadyClaimed")
    assert len(smtp.inbox.messages) == 1


def test_two_processes_racing_to_deliver_send_exactly_one_email(
    smtp: SmtpServer, pki: Pki, storage_config: StorageConfig, tmp_path: Path
) -> None:
    smtp_settings = smtp_config(smtp.port, pki)
    storage = S3Storage.from_settings(make_settings(storage_config, smtp_settings, tmp_path))
    spec = email_spec()
    stored = publish(storage, spec, tmp_path, 1000)
    env = storage_env(storage_config, tmp_path) | smtp_env(smtp_settings, tmp_path)
    go = tmp_path / "go"
    stored_json = json.dumps(dataclasses.asdict(stored))
    children = [start_deliverer(env, spec.model_dump_json(), stored_json, go) for _ in range(2)]
    time.sleep(0.1)  # both started (not a timing assertion: a late child only loses earlier)
    go.touch()
    outcomes = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outcomes.append(DeliveryOutcome.model_validate_json(out))
    assert sorted(o.reason for o in outcomes) == ["AlreadyClaimed", "Sent"]
    assert len(smtp.inbox.messages) == 1


def test_failure_before_sending_releases_the_claim_so_a_retry_sends(
    pki: Pki, storage_config: StorageConfig, tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(storage_config, smtp_config(port, pki), tmp_path)
    storage = S3Storage.from_settings(settings)
    spec = email_spec()
    stored = publish(storage, spec, tmp_path, 1000)
    with pytest.raises(TransientFailure) as caught:  # nothing listens yet
        deliver(spec, stored, storage, settings)
    assert caught.value.reason == mail.UNAVAILABLE
    assert DeliveryOutcome.failed(caught.value).condition()["status"] == "False"
    assert not storage.exists(marker_key(spec))
    server = start_smtp(starttls_context=pki.server_context, require_auth=True)
    try:
        retry_settings = make_settings(storage_config, smtp_config(server.port, pki), tmp_path)
        assert deliver(spec, stored, storage, retry_settings).reason == "Sent"
        assert len(server.inbox.messages) == 1
    finally:
        server.stop()


def test_lost_reply_after_sending_keeps_the_claim_so_no_duplicate_is_sent(
    pki: Pki, storage_config: StorageConfig, tmp_path: Path
) -> None:
    """The server accepts the message but the connection drops before its reply: the outcome
    is unknown, the claim stays, and the retry sends nothing (at most once)."""
    server = start_smtp(starttls_context=pki.server_context, inbox=DroppingInbox())
    try:
        settings = make_settings(
            storage_config, smtp_config(server.port, pki, username=None), tmp_path
        )
        storage = S3Storage.from_settings(settings)
        spec = email_spec()
        stored = publish(storage, spec, tmp_path, 1000)
        with pytest.raises(TransientFailure) as caught:
            deliver(spec, stored, storage, settings)
        assert caught.value.reason == mail.OUTCOME_UNKNOWN
        assert storage.exists(marker_key(spec))
        assert deliver(spec, stored, storage, settings).reason == "AlreadyClaimed"
        assert len(server.inbox.messages) == 1
    finally:
        server.stop()


def test_url_exports_are_not_emailed(
    smtp: SmtpServer, pki: Pki, storage_config: StorageConfig, tmp_path: Path
) -> None:
    settings = make_settings(storage_config, smtp_config(smtp.port, pki), tmp_path)
    storage = S3Storage.from_settings(settings)
    spec = email_spec().model_copy(update={"return_type": ReturnType.URL})
    stored = publish(storage, spec, tmp_path, 1000)
    assert deliver(spec, stored, storage, settings).reason == "NotRequested"
    assert smtp.inbox.messages == []
    assert not storage.exists(marker_key(spec))
