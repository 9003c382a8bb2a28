"""Mail messages, size accounting, TLS defaults, download headers and the settings behind them
(no server needed; the SMTP exchanges are in tests/integration/test_mail_smtp.py)."""

from __future__ import annotations

import email
import ssl
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote

import pytest
from pydantic import ValidationError

from exportd.contract.errors import PermanentFailure
from exportd.delivery import mail
from exportd.delivery.by_email import base64_size
from exportd.settings import (
    MAX_LINK_EXPIRY_SECONDS,
    CommonSettings,
    SmtpConfig,
    StorageConfig,
)
from exportd.storage.cloud import content_disposition, content_type_for, link_seconds


def message(**overrides: object) -> EmailMessage:
    values: dict[str, object] = {
        "sender": "exports@example.org",
        "recipient": "alice@example.com",
        "subject": "s",
        "body": "b",
        "message_id": "<exp-1.export@example.org>",
    }
    return mail.build_message(**(values | overrides))  # type: ignore[arg-type]


def test_message_is_plain_text_and_user_values_stay_text() -> None:
    """A file name full of markup ends up as literal text in a text/plain body: the message
    has no HTML part for it to act in."""
    name = '<b onclick="x()">Q1</b>.csv'
    body = mail.LINK_BODY.substitute(
        file_name=name,
        export_type="userExport",
        export_id="exp-1",
        url="https://example.com/x",
        expires_at="2030-01-01 00:00 UTC",
    )
    built = message(subject=mail.SUBJECT.substitute(file_name=name), body=body)
    parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
    assert [part.get_content_type() for part in parsed.walk()] == ["text/plain"]
    assert isinstance(parsed, EmailMessage)
    assert name in parsed.get_content()
    assert parsed["Subject"] == f"Your export {name} is ready"
    assert parsed["Auto-Submitted"] == "auto-generated"


@pytest.mark.parametrize(
    "address",
    ["alice@example.com\r\nBcc: mallory@example.com", "not-an-address", "a@b@example.com"],
)
def test_invalid_or_injected_addresses_are_refused(address: str) -> None:
    with pytest.raises(PermanentFailure) as caught:
        message(recipient=address)
    assert caught.value.reason == mail.INVALID_ADDRESS


def test_attachment_keeps_a_non_ascii_file_name() -> None:
    attachment = mail.Attachment("Übersicht März.xlsx", "application/octet-stream", b"\x00\x01")
    parsed = email.message_from_bytes(
        message(attachment=attachment).as_bytes(), policy=email.policy.default
    )
    assert isinstance(parsed, EmailMessage)
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == "Übersicht März.xlsx"
    assert part.get_payload(decode=True) == b"\x00\x01"


@pytest.mark.parametrize("size", [0, 1, 57, 1000, 54_321, 300_000])
def test_base64_size_is_a_close_lower_bound_of_the_message(size: int) -> None:
    """The cheap estimate decides "too big" without reading the file: it must never exceed
    the real message, and stay within a few KiB of it (headers and body text)."""
    attachment = mail.Attachment("f.csv", "text/csv", bytes(range(256)) * (size // 256 + 1))
    attachment = mail.Attachment("f.csv", "text/csv", attachment.data[:size])
    real = mail.message_size(message(attachment=attachment))
    assert base64_size(size) <= real < base64_size(size) + 2048


def test_tls_context_verifies_chain_and_host_name_with_tls_12_or_newer(tmp_path: Path) -> None:
    context = mail.tls_context(SmtpConfig(host="smtp.example.org"))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_sending_without_a_configured_server_is_a_permanent_failure() -> None:
    with pytest.raises(PermanentFailure) as caught:
        mail.send_message(SmtpConfig(), message())
    assert caught.value.reason == mail.NOT_CONFIGURED


def test_content_disposition_follows_rfc_6266() -> None:
    assert content_disposition("report.csv") == 'attachment; filename="report.csv"'
    special = content_disposition('Q"1 März%.csv')
    fallback, encoded = special.split("; filename*=UTF-8''")
    assert fallback == 'attachment; filename="Q_1 M_rz_.csv"'
    assert unquote(encoded) == 'Q"1 März%.csv'
    assert content_type_for("x.xlsx") == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert content_type_for(".delivered-email") is None


def test_link_lifetime_is_capped_at_seven_days() -> None:
    assert link_seconds(3600) == 3600
    assert link_seconds(30 * 86400) == MAX_LINK_EXPIRY_SECONDS
    assert link_seconds(0) == 1


def test_link_expiry_above_seven_days_is_refused_at_settings_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert CommonSettings(link_expiry_seconds=MAX_LINK_EXPIRY_SECONDS).link_expiry_seconds == (
        MAX_LINK_EXPIRY_SECONDS
    )
    monkeypatch.setenv("EXPORTD_LINK_EXPIRY_SECONDS", str(MAX_LINK_EXPIRY_SECONDS + 1))
    with pytest.raises(ValidationError, match="7 days"):
        CommonSettings()


def test_smtp_defaults_are_secure() -> None:
    config = CommonSettings().smtp
    assert (config.host, config.mode, config.port, config.ca_file) == (None, "starttls", 587, None)
    assert config.attachment_limit_bytes == 10 * 1024 * 1024
    with pytest.raises(ValidationError):
        SmtpConfig(mode="plain")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        SmtpConfig(sender="not-an-address")


def test_smtp_settings_from_environment_with_password_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n", encoding="utf-8")
    monkeypatch.setenv("EXPORTD_SMTP__HOST", "smtp.example.org")
    monkeypatch.setenv("EXPORTD_SMTP__MODE", "tls")
    monkeypatch.setenv("EXPORTD_SMTP__SENDER", "exports@example.org")
    monkeypatch.setenv("EXPORTD_SMTP__PASSWORD_FILE", str(secret))
    config = CommonSettings().smtp
    assert (config.host, config.mode, config.sender) == (
        "smtp.example.org",
        "tls",
        "exports@example.org",
    )
    assert config.resolved_password() == "s3cret"
    assert "s3cret" not in repr(config)


def test_cloud_storage_needs_a_bucket_and_a_known_kind() -> None:
    with pytest.raises(ValidationError, match="needs a bucket"):
        StorageConfig(kind="s3")
    with pytest.raises(ValidationError):
        StorageConfig(kind="ftp", bucket="b")  # type: ignore[arg-type]
    assert StorageConfig(kind="gcs", bucket="b").multipart_threshold_bytes == 64 * 1024 * 1024
