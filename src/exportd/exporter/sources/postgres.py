"""PostgreSQL source (psycopg 3): a read-only transaction streamed through a server-side cursor.

Why a named cursor: ``DECLARE ... CURSOR`` keeps the result on the server and ``FETCH`` brings
``batch_rows`` rows at a time, so memory stays flat however large the export, and parameters
are bound by the server (never formatted into the SQL text). Each batch is transposed to columns
and converted by Arrow in one call per column.

Session: ``BEGIN READ ONLY``; ``statement_timeout`` and ``TimeZone = UTC`` set locally to the
transaction. The statement timeout bounds each round trip to the server (the ``DECLARE`` and each
``FETCH``), which is where a slow query spends its time; the whole export is bounded by the
export's own ``timeout_seconds``.

Type mapping (result column type -> Arrow):

=========================================  ================================================
PostgreSQL                                 Arrow
=========================================  ================================================
boolean                                    bool
smallint / integer / bigint                int16 / int32 / int64
oid                                        int64
real / double precision                    float32 / float64
numeric(p, s), p <= 38                     decimal128(p, s)
numeric without precision, or p > 38       exportd.decimal_text: the exact digits as
                                           text, NaN and Infinity included (cells.py)
text / varchar / char(n) / name / "char"   string
bytea                                      binary
date                                       date32 (infinity, years > 9999 and BC too:
                                           see pgtemporal.py)
time                                       time64[us]
timestamp                                  timestamp[us] (naive, as stored)
timestamptz                                timestamp[us, tz=UTC] (the exact instant)
anything else (json, jsonb, uuid,          string: PostgreSQL's own text form
interval, arrays, enums, inet, timetz...)
=========================================  ================================================
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.string import TextLoader

from exportd.contract.errors import ExportdError, PermanentFailure, TransientFailure
from exportd.exporter.sources.arrowtypes import (
    ColumnPlan,
    decimal_plan,
    plan,
    text_of_anything,
)
from exportd.exporter.sources.base import QueryOptions
from exportd.exporter.sources.pgtemporal import register_loaders
from exportd.exporter.sources.server import ServerSource, dsn_arguments
from exportd.settings import SourceConfig

NUMERIC_OID = 1700
NATIVE_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    17: pa.binary(),
    18: pa.string(),
    19: pa.string(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    26: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    705: pa.string(),
    1042: pa.string(),
    1043: pa.string(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
CONNECT_TIMEOUT_SECONDS = 10
APPLICATION_NAME = "exportd"
# SQLSTATE classes a retry may get past: connection, resources, operator intervention,
# system errors, transaction rollback (serialization failure, deadlock).
TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P", "58", "40")
SERVER_BUSY_MESSAGES = (
    "too many connections",
    "remaining connection slots",
    "starting up",
    "shutting down",
    "recovery mode",
    "not yet accepting connections",
)


class PostgresSource(ServerSource[psycopg.ServerCursor[Any], psycopg.Error]):
    """One psycopg connection; one streamed query at a time."""

    driver_error = psycopg.Error
    cancelled_ending = "cancelled on the server"
    timeout_ending = "was cancelled on the server"

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        super().__init__()
        self._conn = connection

    @classmethod
    def from_config(cls, config: SourceConfig) -> PostgresSource:
        return cls(connect(config))

    def close(self) -> None:
        self._conn.close()

    def _open_cursor(self, options: QueryOptions) -> psycopg.ServerCursor[Any]:
        timeout = f"{options.statement_timeout_seconds * 1000}ms"
        self._conn.execute(
            "SELECT set_config('statement_timeout', %s, true), set_config('TimeZone', 'UTC', true)",
            [timeout],
        )
        return self._conn.cursor(name=f"exportd_{secrets.token_hex(6)}")

    def _column_plans(self, cursor: psycopg.ServerCursor[Any]) -> list[ColumnPlan]:
        return [column_plan(column) for column in cursor.description or []]

    def _release(self, cursor: psycopg.ServerCursor[Any] | None, *, finished: bool) -> None:
        """Close the cursor and end the transaction; a broken connection needs neither."""
        if self._conn.closed or self._conn.broken:
            return
        try:
            if cursor is not None and self._conn.info.transaction_status is not _IN_ERROR:
                cursor.close()
            self._conn.rollback()
        except psycopg.Error:
            self._conn.close()

    def _stop_query(self) -> None:
        """A PostgreSQL cancel request (libpq's PQcancel, safe from signal handlers)."""
        # Nothing running, or the connection is gone: then there is nothing left to cancel.
        with contextlib.suppress(psycopg.Error):
            self._conn.cancel()

    def _server_failure(self, exc: psycopg.Error, options: QueryOptions) -> ExportdError:
        if isinstance(exc, pg_errors.QueryCanceled):
            if "statement timeout" in (exc.diag.message_primary or ""):
                return self._statement_timeout(options)
            return TransientFailure(
                f"PostgreSQL cancelled the query: {describe(exc)}", reason="QueryCancelled"
            )
        return classify(exc)


_IN_ERROR = psycopg.pq.TransactionStatus.INERROR


def connect(config: SourceConfig) -> psycopg.Connection[Any]:
    """Open the configured database: DSN from settings, password from the secret merged in."""
    kwargs = connection_arguments(config)
    try:
        connection = psycopg.connect(**kwargs)
    except psycopg.Error as exc:
        raise connect_failure(exc) from exc
    connection.read_only = True
    _load_other_types_as_text(connection)
    register_loaders(connection)
    return connection


def connection_arguments(config: SourceConfig) -> dict[str, Any]:
    arguments = dsn_arguments(config, "postgres", conninfo_to_dict, (psycopg.ProgrammingError,))
    arguments.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    arguments.setdefault("application_name", APPLICATION_NAME)
    arguments["client_encoding"] = "UTF8"
    arguments["autocommit"] = False
    return arguments


def _load_other_types_as_text(connection: psycopg.Connection[Any]) -> None:
    """Every built-in type without an Arrow mapping arrives as PostgreSQL's text form, not as
    a Python object (dict, list, UUID, timedelta) whose ``str`` would be Python's, not SQL's."""
    for info in psycopg.postgres.types:
        for oid in (info.oid, getattr(info, "array_oid", 0)):
            if oid and oid not in NATIVE_TYPES and oid != NUMERIC_OID:
                connection.adapters.register_loader(oid, TextLoader)


def column_plan(column: psycopg.Column) -> ColumnPlan:
    if column.type_code == NUMERIC_OID:
        return decimal_plan(column.name, column.precision, column.scale, text=False)
    native = NATIVE_TYPES.get(column.type_code)
    if native is None:
        return ColumnPlan(column.name, pa.string(), text_of_anything())
    return plan(column.name, native)


def describe(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary if exc.sqlstate else None
    text = primary or " ".join(str(exc).split())
    return f"{text} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else text


def connect_failure(exc: psycopg.Error) -> ExportdError:
    """libpq reports a refused connection without its SQLSTATE, only the server's text.

    A ``FATAL`` means the server answered and refused: permanent, unless it is a busy server
    (too many connections, starting up, shutting down). No answer at all (refused, timeout,
    DNS) is transient. The patterns are the server's English messages (``lc_messages`` C or
    en); with other languages a busy server would be reported as permanent.
    """
    if exc.sqlstate:
        return classify(exc)
    text = " ".join(str(exc).split())
    message = f"PostgreSQL: {text}"
    lowered = text.lower()
    if "fatal:" in lowered:
        if any(pattern in lowered for pattern in SERVER_BUSY_MESSAGES):
            return TransientFailure(message, reason="SourceUnavailable")
        if "database" in lowered and "does not exist" in lowered:
            return PermanentFailure(message, reason="SourceDatabaseMissing")
        return PermanentFailure(message, reason="SourceAuthenticationFailed")
    if "no password supplied" in lowered or (exc.pgconn and exc.pgconn.needs_password):
        return PermanentFailure(message, reason="SourceAuthenticationFailed")
    if isinstance(exc, psycopg.ProgrammingError):
        return PermanentFailure(message, reason="SourceConfigInvalid")
    return TransientFailure(message, reason="SourceUnavailable")


def classify(exc: psycopg.Error) -> ExportdError:
    """A psycopg error as the exporter's taxonomy: transient if a retry may help."""
    state = exc.sqlstate or ""
    message = f"PostgreSQL: {describe(exc)}"
    if not state:
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return TransientFailure(message, reason="SourceUnavailable")
        if isinstance(exc, psycopg.DataError):
            return PermanentFailure(message, reason="UnsupportedValue")
        return PermanentFailure(message, reason="QueryFailed")
    if state.startswith(TRANSIENT_SQLSTATE_PREFIXES):
        return TransientFailure(message, reason="SourceUnavailable")
    if state.startswith("28"):
        return PermanentFailure(message, reason="SourceAuthenticationFailed")
    if state == "3D000":
        return PermanentFailure(message, reason="SourceDatabaseMissing")
    if state == "42501":
        return PermanentFailure(message, reason="PermissionDenied")
    if state == "25006":
        return PermanentFailure(message, reason="ReadOnlyTransaction")
    return PermanentFailure(message, reason="QueryFailed")
