"""The mail wrapper against real aiosmtpd servers on loopback: STARTTLS with a trusted test CA,
implicit TLS, a server without STARTTLS, an untrusted self-signed certificate, bad logins and an
unreachable server."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from exportd.contract.errors import PermanentFailure, TransientFailure
from exportd.delivery import mail
from tests.integration.server_fixtures import pki_fixture, smtp_fixture  # noqa: F401
from tests.integration.storage_servers import (
    SMTP_PASSWORD,
    Pki,
    SmtpServer,
    free_port,
    parse_mail,
    smtp_config,
    start_smtp,
)

pytestmark = pytest.mark.integration
RECIPIENT = "alice@example.com"


def a_message(**overrides: Any) -> EmailMessage:
    values: dict[str, Any] = {
        "sender": "exports@example.org",
        "recipient": RECIPIENT,
        "subject": "Your export is ready",
        "body": "hello\n.\nthe line above is a lone dot\n",
        "message_id": "<exp-test.export@example.org>",
    }
    return mail.build_message(**(values | overrides))


def test_starttls_with_trusted_ca_and_login_delivers_the_message_intact(
    smtp: SmtpServer, pki: Pki
) -> None:
    """The server refuses MAIL before STARTTLS and requires a login: arrival proves both."""
    attachment = mail.Attachment("données.csv", "text/csv", b"a,b\n1,2\n")
    mail.send_message(smtp_config(smtp.port, pki), a_message(attachment=attachment))
    [received] = smtp.inbox.messages
    assert received.recipients == (RECIPIENT,)
    parsed = parse_mail(received.content)
    assert parsed["Message-ID"] == "<exp-test.export@example.org>"
    body = parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == "hello\n.\nthe line above is a lone dot\n"
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == "données.csv"
    assert part.get_content() == "a,b\n1,2\n"


def test_server_without_starttls_is_refused_not_used_in_clear(pki: Pki) -> None:
    server = start_smtp()  # plaintext only: does not offer STARTTLS
    try:
        with pytest.raises(PermanentFailure) as caught:
            mail.send_message(smtp_config(server.port, pki), a_message())
        assert caught.value.reason == mail.STARTTLS_UNAVAILABLE
        assert server.inbox.messages == []
    finally:
        server.stop()


def test_self_signed_certificate_is_refused_unless_configured_trusted(pki: Pki) -> None:
    server = start_smtp(starttls_context=pki.self_signed_context)
    try:
        with pytest.raises(PermanentFailure) as caught:
            mail.send_message(smtp_config(server.port, username=None), a_message())
        assert caught.value.reason == mail.CERTIFICATE_REJECTED
        with pytest.raises(PermanentFailure) as caught:  # trusting another CA does not help
            mail.send_message(smtp_config(server.port, pki, username=None), a_message())
        assert caught.value.reason == mail.CERTIFICATE_REJECTED
        assert server.inbox.messages == []
        trusted = smtp_config(server.port, username=None, ca_file=pki.self_signed_file)
        mail.send_message(trusted, a_message())
        assert len(server.inbox.messages) == 1
    finally:
        server.stop()


# The server is told TLS is not "required" because it speaks TLS from the first byte.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_mode_delivers(pki: Pki) -> None:
    server = start_smtp(implicit_context=pki.server_context, require_auth=True)
    try:
        config = smtp_config(server.port, pki, mode="tls")
        mail.send_message(config, a_message())
        assert [m.recipients for m in server.inbox.messages] == [(RECIPIENT,)]
    finally:
        server.stop()


def test_implicit_tls_without_login_delivers(pki: Pki) -> None:
    server = start_smtp(implicit_context=pki.server_context)
    try:
        config = smtp_config(server.port, pki, mode="tls", username=None)
        mail.send_message(config, a_message())
        assert len(server.inbox.messages) == 1
    finally:
        server.stop()


def test_wrong_password_is_a_permanent_failure(smtp: SmtpServer, pki: Pki) -> None:
    config = smtp_config(smtp.port, pki, password="wrong")
    with pytest.raises(PermanentFailure) as caught:
        mail.send_message(config, a_message())
    assert caught.value.reason == mail.AUTH_FAILED
    assert smtp.inbox.messages == []


def test_password_file_is_used_for_login(smtp: SmtpServer, pki: Pki, tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(SMTP_PASSWORD + "\n", encoding="utf-8")
    config = smtp_config(smtp.port, pki, password="stale", password_file=secret)
    mail.send_message(config, a_message())
    assert len(smtp.inbox.messages) == 1


def test_unreachable_server_is_retried_with_backoff_then_transient() -> None:
    """Nothing listens on the port: every attempt is refused; the sleeps between attempts
    follow the exponential backoff, and the last error is a TransientFailure."""
    sleeps: list[float] = []
    config = smtp_config(free_port(), host="127.0.0.1", max_attempts=3)
    with pytest.raises(TransientFailure) as caught:
        mail.send_message(config, a_message(), sleep=sleeps.append)
    assert caught.value.reason == mail.UNAVAILABLE
    assert sleeps == [mail.BACKOFF_SECONDS, mail.BACKOFF_SECONDS * 2]
