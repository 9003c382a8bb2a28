"""Logging for every exportd process: JSON lines for machines, plain lines for people.

Why: at 3 a.m. an on-call engineer searches logs by request id, export id and user; a log
pipeline needs one JSON object per line for that. On a terminal the same records print as
readable lines. Either way, a redaction filter removes secrets (tokens, passwords, the password
of a DSN, signatures of links) from the message *and* from the arguments before anything is
formatted, so no handler, ours or a library's, can write them.

The context fields come from :mod:`contextvars`, so they follow a request or an export through
``await`` and into worker threads started with ``asyncio.to_thread``:

- ``request_id``: set by the API's middleware from (or into) ``X-Request-ID``;
- ``export_id`` and ``user`` (the token's ``sub``): set while an export is handled or run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from pydantic import BaseModel, SecretStr

REDACTED = "[REDACTED]"
HANDLER_NAME = "exportd"
MIN_SECRET_LENGTH = 6  # shorter "secrets" would blank out ordinary words

request_id_var: ContextVar[str | None] = ContextVar("exportd_request_id", default=None)
export_id_var: ContextVar[str | None] = ContextVar("exportd_export_id", default=None)
user_var: ContextVar[str | None] = ContextVar("exportd_user", default=None)

_CONTEXT_FIELDS = (("request_id", request_id_var), ("export_id", export_id_var), ("user", user_var))
# What a secret looks like when it shows up in text nobody meant to log.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A JWT: three base64url parts, the first two JSON objects ("eyJ").
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Authorization header values.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    # scheme://user:password@host (database and SMTP URLs).
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@"), rf"\1{REDACTED}@"),
    # key=value / "key": "value" / key: value, for keys that name secrets; also URL queries.
    (
        re.compile(
            r"(?i)([\"']?\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
            r"secret[_-]?access[_-]?key|authorization|sig|signature|x-amz-signature|"
            r"x-goog-signature|credential)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}]+)"
        ),
        rf"\1{REDACTED}",
    ),
)


class Redactor:
    """Removes known secret values and anything shaped like a secret from text."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, *values: str | SecretStr | None) -> None:
        for value in values:
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if text and len(text) >= MIN_SECRET_LENGTH:
                self._values.add(text)

    def add_settings(self, settings: BaseModel) -> None:
        """Every ``SecretStr`` in a settings object (nested models and dicts included)."""
        self.add(*_secrets_in(settings))

    def __call__(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


def _secrets_in(value: Any) -> Iterator[SecretStr | str]:
    if isinstance(value, SecretStr):
        yield value
        yield from _dsn_passwords(value.get_secret_value())
    elif isinstance(value, str):  # a plain URL setting may still carry a password
        yield from _dsn_passwords(value)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets_in(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secrets_in(item)


def _dsn_passwords(text: str) -> Iterable[str]:
    """The password inside a URL-style DSN, alone (it may be logged without the URL)."""
    for match in re.finditer(r"://[^:/@\s]*:([^@\s]+)@", text):
        yield match.group(1)
    for match in re.finditer(r"(?i)\bpassword\s*=\s*'?([^\s']+)", text):
        yield match.group(1)


REDACT = Redactor()


class RedactingFilter(logging.Filter):
    """Formats the record's message once, redacted, so arguments cannot smuggle secrets."""

    def __init__(self, redactor: Redactor = REDACT) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg!r} {record.args!r}"
        record.msg = self.redactor(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        return True


class ContextFilter(logging.Filter):
    """Copies request id, export id and user from the context onto the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, _ in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        for name, value in getattr(record, "fields", {}).items():
            entry.setdefault(name, value)
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    """``12:00:01 INFO  exportd.api  message  [request=… export=… user=…]`` for terminals."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        context = " ".join(
            f"{name.removesuffix('_id')}={value}"
            for name, _ in _CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        extra = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        line = f"{stamp} {record.levelname:<7} {record.name}  {record.getMessage()}"
        tail = " ".join(part for part in (extra, f"[{context}]" if context else "") if part)
        text = f"{line}  {tail}" if tail else line
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


def configure_logging(
    level: str = "INFO", *, stream: IO[str] | None = None, json_lines: bool | None = None
) -> logging.Handler:
    """Route every logger (uvicorn's and kopf's included) through one redacting handler.

    ``json_lines`` None: JSON unless ``stream`` is a terminal."""
    stream = stream if stream is not None else sys.stderr
    if json_lines is None:
        json_lines = not _isatty(stream)
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if json_lines else ConsoleFormatter())
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == HANDLER_NAME:  # configured again: replace ours, keep others'
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "kopf", "aiohttp"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    return handler


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def log_context(
    *, request_id: str | None = None, export_id: str | None = None, user: str | None = None
) -> Iterator[None]:
    """Set context fields for the ``with`` block (only the ones given)."""
    wanted = ((request_id, request_id_var), (export_id, export_id_var), (user, user_var))
    tokens = [(var, var.set(value)) for value, var in wanted if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def setup_process_logging(settings: BaseModel) -> logging.Handler:
    """Logging of a long-running process from its settings (``log_level``, ``log_format``),
    with every secret of the settings registered for redaction."""
    REDACT.add_settings(settings)
    style = getattr(settings, "log_format", "auto")
    json_lines = None if style == "auto" else style == "json"
    return configure_logging(getattr(settings, "log_level", "INFO"), json_lines=json_lines)
