"""Delivering exports by e-mail end to end: S3 storage on moto, SMTP (STARTTLS, test CA, login)
on aiosmtpd. Attachment or link by size, one e-mail per export even when two processes race,
the claim released on a failure before sending and kept when the outcome is unknown."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exportd.contract.errors import TransientFailure
from exportd.contract.spec import ExportFormat, ExportSpec, ReturnType
from exportd.delivery import mail
from exportd.delivery.by_email import DeliveryOutcome, deliver, marker_key
from exportd.settings import CommonSettings, SmtpConfig, StorageConfig
from exportd.storage import StoredObject
from exportd.storage.s3 import S3Storage
from tests.integration import storage_servers
from tests.integration.server_fixtures import (  # noqa: F401
    moto_fixture,
    pki_fixture,
    s3_bucket_fixture,
    smtp_fixture,
)
from tests.integration.storage_servers import (
    DroppingInbox,
    Pki,
    SmtpServer,
    free_port,
    link_in_mail,
    parse_mail,
    release_together,
    smtp_env,
    start_deliverer,
    start_smtp,
    storage_env,
    write_random,
)

pytestmark = pytest.mark.integration
RECIPIENT = "alice@example.com"
LIMIT = 64 * 1024


def smtp_config(port: int, pki: Pki, **overrides: Any) -> SmtpConfig:
    """The shared test settings (STARTTLS, login, test CA) with attachments up to LIMIT."""
    return storage_servers.smtp_config(port, pki, **{"attachment_limit_bytes": LIMIT, **overrides})


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


@dataclass(frozen=True)
class Published:
    """An export already stored on S3 of ``size`` random bytes, ready to deliver."""

    spec: ExportSpec
    stored: StoredObject
    storage: S3Storage
    settings: CommonSettings

    def deliver(self, settings: CommonSettings | None = None) -> DeliveryOutcome:
        """One delivery attempt, with these settings or others (another SMTP server)."""
        return deliver(self.spec, self.stored, self.storage, settings or self.settings)


def make_settings(
    storage_config: StorageConfig, smtp: SmtpConfig, tmp_path: Path
) -> CommonSettings:
    return CommonSettings(storage=storage_config, smtp=smtp, data_dir=tmp_path / "data")


def publish(
    storage_config: StorageConfig,
    smtp: SmtpConfig,
    tmp_path: Path,
    size: int,
    spec: ExportSpec | None = None,
) -> Published:
    """Stores ``spec`` (by default a fresh e-mail export) as the exporter would, before it
    delivers: ``size`` random bytes at the spec's object key."""
    settings = make_settings(storage_config, smtp, tmp_path)
    storage = S3Storage.from_settings(settings)
    spec = spec or email_spec()
    path = tmp_path / f"export-{size}.csv"
    stored = storage.publish(
        path,
        spec.object_key,
        content_type=spec.format.content_type,
        download_name=spec.file_name,
        sha256=write_random(path, size),
    )
    return Published(spec, stored, storage, settings)


def test_small_export_arrives_attached(
    smtp: SmtpServer, pki: Pki, s3_bucket: StorageConfig, tmp_path: Path
) -> None:
    """A 20,000-byte export: delivered (Sent, as an attachment, condition True) in one message
    within the limit, subject and file name as given, attachment with the stored SHA-256; the
    delivery marker is written."""
    export = publish(s3_bucket, smtp_config(smtp.port, pki), tmp_path, 20_000)
    outcome = export.deliver()
    assert (outcome.delivered, outcome.reason, outcome.method) == (True, "Sent", "attachment")
    assert outcome.condition()["status"] == "True"
    [received] = smtp.inbox.messages
    assert len(received.content) <= LIMIT
    message = parse_mail(received.content)
    assert message["Subject"] == "Your export Bericht März.csv is ready"
    [part] = list(message.iter_attachments())
    assert part.get_filename() == "Bericht März.csv"
    assert hashlib.sha256(part.get_payload(decode=True)).hexdigest() == export.stored.sha256
    assert export.storage.exists(marker_key(export.spec))


def test_export_over_the_limit_arrives_as_a_link_that_downloads_it(
    smtp: SmtpServer, pki: Pki, s3_bucket: StorageConfig, tmp_path: Path
) -> None:
    """48 KiB fits the 64 KiB limit raw, but not base64-encoded with headers: a link."""
    export = publish(s3_bucket, smtp_config(smtp.port, pki), tmp_path, 48 * 1024)
    outcome = export.deliver()
    assert (outcome.delivered, outcome.method) == (True, "link")
    assert outcome.link_expires_at is not None
    assert abs(outcome.link_expires_at.timestamp() - time.time() - 24 * 3600) < 60
    [received] = smtp.inbox.messages
    url = link_in_mail(received.content)
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback http
        assert hashlib.sha256(response.read()).hexdigest() == export.stored.sha256


def test_a_second_delivery_of_the_same_export_sends_nothing(
    smtp: SmtpServer, pki: Pki, s3_bucket: StorageConfig, tmp_path: Path
) -> None:
    """Delivering an export again after it was sent: AlreadyClaimed, still one message."""
    export = publish(s3_bucket, smtp_config(smtp.port, pki), tmp_path, 1000)
    assert export.deliver().delivered is True
    again = export.deliver()
    assert (again.delivered, again.reason) == (None, "AlreadyClaimed")
    assert len(smtp.inbox.messages) == 1


def test_two_processes_racing_to_deliver_send_exactly_one_email(
    smtp: SmtpServer, pki: Pki, s3_bucket: StorageConfig, tmp_path: Path
) -> None:
    """Two deliverer processes released at once for one export: both exit 0, one Sent and
    one AlreadyClaimed, and exactly one message arrives."""
    smtp_settings = smtp_config(smtp.port, pki)
    export = publish(s3_bucket, smtp_settings, tmp_path, 1000)
    env = storage_env(s3_bucket, tmp_path) | smtp_env(smtp_settings, tmp_path)
    go = tmp_path / "go"
    stored_json = json.dumps(dataclasses.asdict(export.stored))
    spec_json = export.spec.model_dump_json()
    children = [start_deliverer(env, spec_json, stored_json, go) for _ in range(2)]
    outcomes = [DeliveryOutcome.model_validate_json(out) for out in release_together(children, go)]
    assert sorted(o.reason for o in outcomes) == ["AlreadyClaimed", "Sent"]
    assert len(smtp.inbox.messages) == 1


def test_failure_before_sending_releases_the_claim_so_a_retry_sends(
    pki: Pki, s3_bucket: StorageConfig, tmp_path: Path
) -> None:
    """Nothing listens on the SMTP port: a TransientFailure (unavailable, condition False)
    and no marker; once a server listens, the retry sends one message."""
    export = publish(s3_bucket, smtp_config(free_port(), pki), tmp_path, 1000)
    with pytest.raises(TransientFailure) as caught:  # nothing listens yet
        export.deliver()
    assert caught.value.reason == mail.UNAVAILABLE
    assert DeliveryOutcome.failed(caught.value).condition()["status"] == "False"
    assert not export.storage.exists(marker_key(export.spec))
    server = start_smtp(starttls_context=pki.server_context, require_auth=True)
    try:
        retry_settings = make_settings(s3_bucket, smtp_config(server.port, pki), tmp_path)
        assert export.deliver(retry_settings).reason == "Sent"
        assert len(server.inbox.messages) == 1
    finally:
        server.stop()


def test_lost_reply_after_sending_keeps_the_claim_so_no_duplicate_is_sent(
    pki: Pki, s3_bucket: StorageConfig, tmp_path: Path
) -> None:
    """The server accepts the message but the connection drops before its reply: the outcome
    is unknown, the claim stays, and the retry sends nothing (at most once)."""
    server = start_smtp(starttls_context=pki.server_context, inbox=DroppingInbox())
    try:
        smtp_settings = smtp_config(server.port, pki, username=None)
        export = publish(s3_bucket, smtp_settings, tmp_path, 1000)
        with pytest.raises(TransientFailure) as caught:
            export.deliver()
        assert caught.value.reason == mail.OUTCOME_UNKNOWN
        assert export.storage.exists(marker_key(export.spec))
        assert export.deliver().reason == "AlreadyClaimed"
        assert len(server.inbox.messages) == 1
    finally:
        server.stop()


def test_url_exports_are_not_emailed(
    smtp: SmtpServer, pki: Pki, s3_bucket: StorageConfig, tmp_path: Path
) -> None:
    """An export with return type URL: NotRequested, no message, no marker."""
    url_spec = email_spec().model_copy(update={"return_type": ReturnType.URL})
    export = publish(s3_bucket, smtp_config(smtp.port, pki), tmp_path, 1000, url_spec)
    assert export.deliver().reason == "NotRequested"
    assert smtp.inbox.messages == []
    assert not export.storage.exists(marker_key(export.spec))
