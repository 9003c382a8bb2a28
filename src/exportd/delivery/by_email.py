"""Delivering a finished export by e-mail, at most once per export, whoever runs it.

An export can be run twice (a Job retried after a crash, two exporters racing). The file is
stored once (create-only publish); the e-mail must be sent once too. Before sending, the sender
*claims* the delivery by publishing a create-only marker object
``exports/<id>/.delivered-email`` in the same storage. Exactly one process can create it; any
other finds it there and sends nothing.

The trade-off, chosen for at-most-once (a missing e-mail is visible in the export's status and
the file is still reachable; a duplicate e-mail with an attachment cannot be taken back):

- A failure known to have happened before the server accepted the message (no connection, TLS
  refused, 4xx/5xx before or at the end of DATA) releases the claim (deletes the marker), so the
  export's next attempt sends it.
- A failure after the message body went out (connection lost while waiting for the final
  reply), or a crash between claim and send, keeps the claim: the outcome is unknown and no
  later attempt sends again. The export reports ``Delivered`` False with that reason.

The message carries the file when the whole message, base64 and headers included, fits under
``smtp.attachment_limit_bytes``; otherwise a link valid for ``link_expiry_seconds`` (the API's
handle link in ``link_mode: handle``, else a signed storage URL).

With no SMTP server and ``smtp.outbox`` on (embedded mode's default), the composed message is
kept in the development outbox (:mod:`exportd.delivery.outbox`) instead, under the same claim.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import socket
import tempfile
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from exportd.contract.errors import ExportdError, PermanentFailure
from exportd.contract.spec import (
    DELIVERED,
    Condition,
    ExportErrorInfo,
    ExportSpec,
    ReturnType,
    utc_now,
)
from exportd.delivery import mail, outbox
from exportd.security.links import HandleLinks
from exportd.settings import CommonSettings
from exportd.storage.base import Storage, StoredObject

MARKER_NAME = ".delivered-email"
OUTBOX_REASON = "KeptInOutbox"
_BASE64_LINE = 76


class DeliveryOutcome(BaseModel):
    """What became of the e-mail; ``delivered`` None means another run owns the delivery."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delivered: bool | None
    reason: str
    message: str = ""
    method: Literal["attachment", "link"] | None = None
    message_id: str | None = None
    link_expires_at: datetime | None = None

    def condition(self) -> dict[str, str]:
        """The ``Delivered`` condition (Kubernetes style) for the export's status."""
        status = {True: "True", False: "False", None: "Unknown"}[self.delivered]
        return {"type": DELIVERED, "status": status, "reason": self.reason, "message": self.message}

    @classmethod
    def failed(cls, error: ExportdError) -> DeliveryOutcome:
        """The outcome to record when :func:`deliver` raised."""
        return cls(delivered=False, reason=error.reason, message=error.message)


# Reasons an e-mail was not sent; an export that failed with one is recorded Delivered False.
FAILURE_REASONS = frozenset(
    {
        mail.OUTCOME_UNKNOWN,
        mail.UNAVAILABLE,
        mail.STARTTLS_UNAVAILABLE,
        mail.CERTIFICATE_REJECTED,
        mail.TLS_FAILED,
        mail.AUTH_FAILED,
        mail.REJECTED,
        mail.NOT_CONFIGURED,
        mail.INVALID_ADDRESS,
    }
)


def failure_conditions(spec: ExportSpec, error: ExportErrorInfo | None) -> list[Condition]:
    """``[Delivered False]`` when an e-mail export failed for a reason of sending, else []."""
    if spec.return_type is not ReturnType.EMAIL or error is None:
        return []
    if error.reason not in FAILURE_REASONS:
        return []
    return [Condition(type=DELIVERED, status="False", reason=error.reason, message=error.message)]


def marker_key(spec: ExportSpec) -> str:
    return f"exports/{spec.id}/{MARKER_NAME}"


def deliver(
    spec: ExportSpec, stored: StoredObject, storage: Storage, settings: CommonSettings
) -> DeliveryOutcome:
    """E-mail the stored export to ``spec.email`` unless another run already claimed it.

    Raises TransientFailure / PermanentFailure (reason from :mod:`exportd.delivery.mail`) when
    sending
    failed; the claim is released first unless the message may have been accepted."""
    if spec.return_type is not ReturnType.EMAIL:
        return DeliveryOutcome(delivered=None, reason="NotRequested")
    config = settings.smtp
    in_outbox = outbox.outbox_enabled(settings)
    if not in_outbox and (not config.host or config.sender is None):
        raise PermanentFailure(
            "returnType email needs smtp.host and smtp.sender", reason=mail.NOT_CONFIGURED
        )
    if spec.email is None:
        raise PermanentFailure("returnType email without an address", reason=mail.INVALID_ADDRESS)
    # Composed before claiming: a crash while reading the file then leaves no claim behind.
    message, method, expires_at = compose(spec, stored, storage, settings)
    if not _claim(storage, spec):
        return DeliveryOutcome(
            delivered=None,
            reason="AlreadyClaimed",
            message="another run of this export owns its e-mail",
        )
    transmitted = False

    def mark_transmitted() -> None:
        nonlocal transmitted
        transmitted = True

    try:
        if in_outbox:
            return _keep_in_outbox(spec, message, method, expires_at, settings)
        mail.send_message(config, message, on_transmit=mark_transmitted)
    except BaseException as exc:
        if not (transmitted and _maybe_accepted(exc)):
            storage.delete(marker_key(spec))
        raise
    return DeliveryOutcome(
        delivered=True,
        reason="Sent",
        message=f"e-mailed to {spec.email} as {method}",
        method=method,
        message_id=str(message["Message-ID"]),
        link_expires_at=expires_at,
    )


def _keep_in_outbox(
    spec: ExportSpec,
    message: EmailMessage,
    method: Literal["attachment", "link"],
    expires_at: datetime | None,
    settings: CommonSettings,
) -> DeliveryOutcome:
    """The development outbox instead of a server: the message is kept, not sent."""
    entry = outbox.OutboxEntry(
        export_id=spec.id,
        requested_by=spec.requested_by,
        to=str(spec.email),
        subject=str(message["Subject"]),
        kept_at=utc_now(),
        method=method,
        bytes=0,
    )
    path = outbox.keep(outbox.outbox_dir(settings), entry, message)
    return DeliveryOutcome(
        delivered=True,
        reason=OUTBOX_REASON,
        message=f"kept in the development outbox as {path} (no smtp.host: nothing was sent)",
        method=method,
        message_id=str(message["Message-ID"]),
        link_expires_at=expires_at,
    )


def compose(
    spec: ExportSpec, stored: StoredObject, storage: Storage, settings: CommonSettings
) -> tuple[EmailMessage, Literal["attachment", "link"], datetime | None]:
    """The e-mail for ``spec``: with the file attached when it fits, else with a link."""
    config = settings.smtp
    assert spec.email is not None
    sender = str(config.sender or outbox.OUTBOX_SENDER)
    envelope = functools.partial(
        mail.build_message,
        sender=sender,
        recipient=str(spec.email),
        subject=mail.SUBJECT.substitute(file_name=spec.file_name),
        message_id=f"<{spec.id}.export@{sender.rpartition('@')[2]}>",
    )
    values = {"file_name": spec.file_name, "export_type": spec.type, "export_id": spec.id}
    if base64_size(stored.size) < config.attachment_limit_bytes:
        attachment = mail.Attachment(
            spec.file_name, spec.format.content_type, b"".join(storage.open_read(stored.key))
        )
        body = mail.ATTACHMENT_BODY.substitute(values, sha256=stored.sha256)
        message = envelope(body=body, attachment=attachment)
        if mail.message_size(message) <= config.attachment_limit_bytes:
            return message, "attachment", None
    url, expires = email_link(spec, stored, storage, settings)
    expires_at = datetime.fromtimestamp(expires, UTC)
    body = mail.LINK_BODY.substitute(values, url=url, expires_at=f"{expires_at:%Y-%m-%d %H:%M} UTC")
    return envelope(body=body), "link", expires_at


def email_link(
    spec: ExportSpec, stored: StoredObject, storage: Storage, settings: CommonSettings
) -> tuple[str, int]:
    """The link an e-mail carries: the API's revocable handle link in ``link_mode: handle``,
    else a signed storage URL; valid ``link_expiry_seconds`` either way."""
    if settings.link_mode == "handle":
        links = HandleLinks.from_settings(settings)
        return links.url(spec.id, spec.requested_by, settings.link_expiry_seconds)
    return storage.signed_url(
        stored.key, expires_in=settings.link_expiry_seconds, download_name=spec.file_name
    )


def base64_size(size: int) -> int:
    """Bytes a file of ``size`` takes as a base64 MIME part (a lower bound of the message)."""
    encoded = 4 * math.ceil(size / 3)
    return encoded + 2 * math.ceil(encoded / _BASE64_LINE)


def _claim(storage: Storage, spec: ExportSpec) -> bool:
    """Create the marker; True if this process created it (and so owns the delivery)."""
    record = {
        "exportId": spec.id,
        "claimedAt": utc_now().isoformat(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    with tempfile.TemporaryDirectory(prefix="exportd-claim-") as directory:
        path = Path(directory) / MARKER_NAME
        data = json.dumps(record).encode()
        path.write_bytes(data)
        stored = storage.publish(
            path,
            marker_key(spec),
            content_type="application/json",
            download_name=MARKER_NAME,
            sha256=hashlib.sha256(data).hexdigest(),
        )
    return stored.created


def _maybe_accepted(exc: BaseException) -> bool:
    """After the body went out, only a definite SMTP refusal proves it was not accepted."""
    if isinstance(exc, ExportdError):
        return exc.reason == mail.OUTCOME_UNKNOWN
    return True
