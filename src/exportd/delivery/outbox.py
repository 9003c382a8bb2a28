"""The development outbox: e-mail kept on disk instead of sent, for trying exportd locally.

Embedded mode with no SMTP server configured (``smtp.host`` unset) turns it on by default
(``smtp.outbox``), so ``returnType: email`` works out of the box: the exporter writes the whole
message, exactly as it would have gone to the server, to ``DATA_DIR/outbox/<export id>.eml``
beside a small JSON summary, and the web page lists them. Nothing leaves the machine. It is a
development aid, never a delivery: a deployment sets ``smtp.host`` (which turns it off).

One file per export (its name is the export id), created under a temporary name and renamed
into place, so a reader never sees half a message; the delivery claim of
:mod:`exportd.delivery.by_email` keeps a second run of the same export from writing again.
"""

from __future__ import annotations

import os
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from exportd.settings import CommonSettings

OUTBOX_DIR = "outbox"
# The From address of outbox messages when no smtp.sender is set (a documentation domain).
OUTBOX_SENDER = "exportd@example.com"
MESSAGE_SUFFIX = ".eml"
SUMMARY_SUFFIX = ".json"


class OutboxEntry(BaseModel):
    """What the page shows of one kept message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    export_id: str
    requested_by: str
    to: str
    subject: str
    kept_at: datetime
    method: str
    bytes: int


def outbox_dir(settings: CommonSettings) -> Path:
    return settings.data_dir / OUTBOX_DIR


def outbox_enabled(settings: CommonSettings) -> bool:
    return settings.smtp.host is None and settings.smtp.outbox is True


def keep(directory: Path, entry: OutboxEntry, message: EmailMessage) -> Path:
    """Write ``message`` and its summary; the summary last, so a listed entry is complete."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{entry.export_id}{MESSAGE_SUFFIX}"
    _write_once(path, message.as_bytes())
    summary = entry.model_copy(update={"bytes": path.stat().st_size})
    _write_once(path.with_suffix(SUMMARY_SUFFIX), summary.model_dump_json().encode())
    return path


def entries(directory: Path, owner: str | None) -> list[OutboxEntry]:
    """The kept messages of ``owner`` (everyone's for None), newest first."""
    found: list[OutboxEntry] = []
    for summary in directory.glob(f"*{SUMMARY_SUFFIX}") if directory.is_dir() else ():
        try:
            entry = OutboxEntry.model_validate_json(summary.read_bytes())
        except (OSError, ValidationError):
            continue  # removed meanwhile, or not ours
        if owner is None or entry.requested_by == owner:
            found.append(entry)
    return sorted(found, key=lambda entry: entry.kept_at, reverse=True)


def message_path(directory: Path, export_id: str) -> Path:
    return directory / f"{export_id}{MESSAGE_SUFFIX}"


def _write_once(path: Path, data: bytes) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}.part")
    scratch.write_bytes(data)
    os.replace(scratch, path)
