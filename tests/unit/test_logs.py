"""Logging: one JSON object per line with the context fields, readable lines on a terminal,
and no secret in any of them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from exportd.ops import logs
from exportd.security.tokens import mint_token
from exportd.settings import ApiSettings, SourceConfig

JWT_SECRET = "unit-test-jwt-secret-0123456789abcdef"
DB_PASSWORD = "Db-Pa55word-Never-Logged"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_json_lines_carry_timestamp_level_message_and_context(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure_logging("INFO", stream=stream)
    log = logging.getLogger("exportd.test")
    with logs.log_context(request_id="req-1", export_id="exp-abc", user="alice"):
        log.info("export %s started", "exp-abc")
    log.warning("outside any request")
    first, second = (json.loads(line) for line in lines(stream))
    assert first["level"] == "INFO"
    assert first["message"] == "export exp-abc started"
    assert first["logger"] == "exportd.test"
    assert (first["request_id"], first["export_id"], first["user"]) == ("req-1", "exp-abc", "alice")
    assert first["timestamp"].endswith("+00:00")
    assert second["level"] == "WARNING" and "request_id" not in second


def test_a_terminal_gets_readable_lines(restore_logging: None) -> None:
    stream = Terminal()
    logs.configure_logging("INFO", stream=stream)
    with logs.log_context(request_id="req-2"):
        logging.getLogger("exportd.test").info("hello")
    (line,) = lines(stream)
    assert not line.startswith("{")
    assert "INFO" in line and "hello" in line and "request=req-2" in line


def test_exceptions_are_logged_as_one_line_of_json(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure_logging("INFO", stream=stream)
    try:
        raise RuntimeError(f"cannot connect to postgresql://app:{DB_PASSWORD}@db/x")
    except RuntimeError:
        logging.getLogger("exportd.test").exception("failed")
    (line,) = lines(stream)
    entry = json.loads(line)
    assert "RuntimeError" in entry["exception"]
    assert DB_PASSWORD not in line


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer {token}",
        "token={token}",
        "got {token} from the client",
        "dsn=postgresql://reader:{password}@127.0.0.1:5432/test",
        "mysql://root:{password}@host/db",
        "password={password} host=db",
        '{{"password": "{password}"}}',
        "GET /files/exports/x?exp=1700000000&sig={password}",
    ],
)
def test_secret_shapes_are_redacted(text: str, restore_logging: None) -> None:
    """Tokens, DSN passwords, password fields and link signatures never reach a log line."""
    token = mint_token("alice", JWT_SECRET)
    stream = io.StringIO()
    logs.configure_logging("INFO", stream=stream)
    logging.getLogger("exportd.test").warning(text.format(token=token, password=DB_PASSWORD))
    (line,) = lines(stream)
    assert token not in line and DB_PASSWORD not in line
    assert logs.REDACTED in line


def test_secrets_from_settings_are_redacted_wherever_they_appear(restore_logging: None) -> None:
    """A registered secret is removed even in arguments and in text with no telltale key."""
    settings = ApiSettings(
        jwt_secret=JWT_SECRET,
        state_db_url=f"postgresql://exportd:{DB_PASSWORD}x@db:5432/state",
        sources={
            "pg": SourceConfig(kind="postgres", dsn=SecretStr(f"postgresql://u:{DB_PASSWORD}@h/d"))
        },
    )
    redactor = logs.Redactor()
    redactor.add_settings(settings)
    stream = io.StringIO()
    handler = logs.configure_logging("INFO", stream=stream)
    handler.filters[0] = logs.RedactingFilter(redactor)
    log = logging.getLogger("exportd.test")
    log.info("secret as an argument: %s", JWT_SECRET)
    log.info("bare password %s in a sentence", DB_PASSWORD)
    log.info("state database password %s", f"{DB_PASSWORD}x")
    output = stream.getvalue()
    assert JWT_SECRET not in output and DB_PASSWORD not in output
    assert output.count(logs.REDACTED) == 3


def test_ordinary_text_is_left_alone() -> None:
    text = "export exp-123 wrote 100 rows to exports/exp-123/a.csv in 1.5 s (tokens left: 4)"
    assert logs.Redactor()(text) == text


def test_library_loggers_go_through_the_same_handler(restore_logging: None) -> None:
    """uvicorn's own handlers are removed so its lines are JSON and redacted too."""
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
    stream = io.StringIO()
    logs.configure_logging("INFO", stream=stream)
    logging.getLogger("uvicorn.error").info("Started server process")
    assert json.loads(lines(stream)[0])["logger"] == "uvicorn.error"
