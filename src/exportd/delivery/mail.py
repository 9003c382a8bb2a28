"""The one way exportd sends e-mail: TLS always, certificates verified, bounded retries.

Why it is strict:

- ``starttls`` mode upgrades the connection after EHLO and refuses to go on when the server
  does not offer STARTTLS: no plaintext fallback, so neither the password nor the file ever
  crosses the network in clear. ``tls`` mode speaks TLS from the first byte (port 465). Both
  verify the server's certificate and host name against the system CAs or ``smtp.ca_file``.
- Messages are plain text built from fixed templates in this module; the values put into them
  (file name, link, dates) are plain text too, and the e-mail package refuses line breaks in
  headers, so a request can inject neither markup nor headers.
- A transient failure (connection refused or dropped, timeout, 4xx reply) is retried with
  exponential backoff ``smtp.max_attempts`` times, but only while the message cannot have been
  accepted yet. Once the message body was sent, a lost reply leaves the outcome unknown: that
  is reported as ``SmtpOutcomeUnknown`` and never retried here, so a retry cannot send twice.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr
from string import Template

from pydantic import TypeAdapter, ValidationError

from exportd.contract.addresses import EmailAddress
from exportd.contract.errors import ExportdError, PermanentFailure, TransientFailure
from exportd.contract.spec import utc_now
from exportd.settings import SmtpConfig

OUTCOME_UNKNOWN = "SmtpOutcomeUnknown"
UNAVAILABLE = "SmtpUnavailable"
STARTTLS_UNAVAILABLE = "SmtpStartTlsUnavailable"
CERTIFICATE_REJECTED = "SmtpCertificateRejected"
TLS_FAILED = "SmtpTlsFailed"
AUTH_FAILED = "SmtpAuthenticationFailed"
REJECTED = "SmtpRejected"
NOT_CONFIGURED = "SmtpNotConfigured"
INVALID_ADDRESS = "InvalidEmailAddress"

BACKOFF_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
_EMAIL = TypeAdapter(EmailAddress)
_LEADING_DOTS = re.compile(rb"(?m)^\.")

SUBJECT = Template("Your export $file_name is ready")
LINK_BODY = Template(
    "Hello,\n\n"
    "your export $file_name ($export_type, export $export_id) is ready.\n\n"
    "Download it here until $expires_at:\n$url\n\n"
    "This link is personal; anyone who has it can download the file.\n"
    "This message was sent automatically by exportd.\n"
)
ATTACHMENT_BODY = Template(
    "Hello,\n\n"
    "your export $file_name ($export_type, export $export_id) is attached.\n"
    "SHA-256 of the file: $sha256\n\n"
    "This message was sent automatically by exportd.\n"
)


@dataclass(frozen=True)
class Attachment:
    file_name: str
    content_type: str
    data: bytes


def valid_address(address: str) -> str:
    """The address if it is a valid e-mail address, else PermanentFailure."""
    try:
        return str(_EMAIL.validate_python(address))
    except ValidationError as exc:
        raise PermanentFailure(
            f"invalid e-mail address {address!r}", reason=INVALID_ADDRESS
        ) from exc


def build_message(
    *,
    sender: str,
    recipient: str,
    subject: str,
    body: str,
    message_id: str,
    attachment: Attachment | None = None,
) -> EmailMessage:
    """A plain-text message; ``message_id`` is stable per export so receivers can spot a copy."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = formataddr(("exportd", valid_address(sender)))
    message["To"] = valid_address(recipient)
    message["Subject"] = subject
    message["Date"] = format_datetime(utc_now())
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    message.set_content(body, subtype="plain", charset="utf-8")
    if attachment is not None:
        maintype, _, subtype = attachment.content_type.partition(";")[0].strip().partition("/")
        message.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.file_name
        )
    return message


def message_size(message: EmailMessage) -> int:
    """Bytes on the wire (base64 and MIME headers included), what a server's limit counts."""
    return len(message.as_bytes())


def send_message(
    config: SmtpConfig,
    message: EmailMessage,
    *,
    on_transmit: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Send ``message``, retrying transient failures that happened before the body was sent.

    ``on_transmit`` is called just before the body goes out (from then on the server may have
    accepted the message even if this function raises)."""
    if not config.host:
        raise PermanentFailure(
            "e-mail delivery is not configured (smtp.host)", reason=NOT_CONFIGURED
        )
    for attempt in range(1, config.max_attempts + 1):
        try:
            _send_once(config, message, on_transmit)
            return
        except TransientFailure as exc:
            if exc.reason == OUTCOME_UNKNOWN or attempt == config.max_attempts:
                raise
        sleep(min(BACKOFF_MAX_SECONDS, BACKOFF_SECONDS * 2 ** (attempt - 1)))


def tls_context(config: SmtpConfig) -> ssl.SSLContext:
    """Verify the chain and the host name; TLS 1.2 at least."""
    cafile = str(config.ca_file) if config.ca_file is not None else None
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _send_once(
    config: SmtpConfig, message: EmailMessage, on_transmit: Callable[[], None] | None
) -> None:
    assert config.host is not None
    with _smtp_errors(config):
        smtp = _connect(config)
        try:
            username, password = config.username, config.resolved_password()
            if username:
                smtp.login(username, password or "")
            _envelope(smtp, message)
            if on_transmit is not None:
                on_transmit()
            _transmit(smtp, message)
        finally:
            _close(smtp)


def _connect(config: SmtpConfig) -> smtplib.SMTP:
    assert config.host is not None
    context = tls_context(config)
    if config.mode == "tls":
        secure = smtplib.SMTP_SSL(
            config.host, config.port, timeout=config.timeout_seconds, context=context
        )
        try:
            secure.ehlo()
        except BaseException:
            _close(secure)
            raise
        return secure
    smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds)
    try:
        smtp.ehlo()
        if not smtp.has_extn("starttls"):
            raise PermanentFailure(
                f"{config.host}:{config.port} does not offer STARTTLS; refusing to send in clear",
                reason=STARTTLS_UNAVAILABLE,
            )
        smtp.starttls(context=context)
        smtp.ehlo()
    except BaseException:
        _close(smtp)
        raise
    return smtp


def _envelope(smtp: smtplib.SMTP, message: EmailMessage) -> None:
    code, reply = smtp.mail(_bare_address(message["From"]))
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, message["From"])
    code, reply = smtp.rcpt(str(message["To"]))
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({str(message["To"]): (code, reply)})


def _transmit(smtp: smtplib.SMTP, message: EmailMessage) -> None:
    """DATA by hand, so that a failure after the body went out is told apart from one before."""
    code, reply = smtp.docmd("DATA")
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    payload = _LEADING_DOTS.sub(b"..", message.as_bytes())
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    try:
        smtp.send(payload + b".\r\n")
        code, reply = smtp.getreply()
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise TransientFailure(
            f"connection lost after the message was sent: {exc}", reason=OUTCOME_UNKNOWN
        ) from exc
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


def _bare_address(header: object) -> str:
    addresses = getattr(header, "addresses", ())
    return str(addresses[0].addr_spec) if addresses else str(header)


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


@contextmanager
def _smtp_errors(config: SmtpConfig) -> Iterator[None]:
    """smtplib/ssl/socket errors -> the exportd taxonomy, with a stable reason."""
    try:
        yield
    except ExportdError:
        raise
    except Exception as exc:
        raise _translate(exc, f"{config.host}:{config.port}") from exc


def _translate(exc: Exception, where: str) -> ExportdError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentFailure(
            f"SMTP server {where}: certificate not trusted ({exc.verify_message})",
            reason=CERTIFICATE_REJECTED,
        )
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
        return PermanentFailure(f"SMTP server {where}: TLS failed ({exc})", reason=TLS_FAILED)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return PermanentFailure(f"SMTP server {where}: login refused", reason=AUTH_FAILED)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentFailure(f"SMTP server {where}: {exc}", reason=STARTTLS_UNAVAILABLE)
    code = _reply_code(exc)
    if code is not None and code >= 500:
        return PermanentFailure(f"SMTP server {where} refused: {code} {exc}", reason=REJECTED)
    # 4xx replies, refused or dropped connections, timeouts: may work on the next attempt.
    return TransientFailure(f"SMTP server {where} unavailable: {exc!r}", reason=UNAVAILABLE)


def _reply_code(exc: Exception) -> int | None:
    if isinstance(exc, smtplib.SMTPResponseException):
        return int(exc.smtp_code)
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        return int(next(iter(exc.recipients.values()))[0])
    return None
