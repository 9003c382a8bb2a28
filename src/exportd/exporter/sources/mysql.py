"""MySQL and MariaDB source (PyMySQL): an unbuffered, read-only session streamed in batches.

Why unbuffered (``SSCursor``): rows are read off the socket as the writer asks for them, so the
client never holds the whole result. Why no value converters: PyMySQL's per-value Python parsing
is its slowest part; here every value stays the server's text and each batch column is parsed
by one Arrow cast (integers, decimals, dates, timestamps).

Session: ``time_zone = '+00:00'`` (so ``TIMESTAMP`` values are UTC instants),
``SESSION TRANSACTION READ ONLY``, autocommit (each query is its own read-only transaction), and
the statement timeout as ``max_statement_time`` (MariaDB, seconds) or ``max_execution_time``
(MySQL, milliseconds, SELECT only), chosen from the server's version string. The timeout covers
the whole statement including streaming. Parameters travel through PyMySQL's escaping (the
text protocol has no server-side binding); it honours ``NO_BACKSLASH_ESCAPES``.

Cancellation: ``KILL QUERY <connection id>`` over a second, short-lived connection.

Type mapping (result column type -> Arrow):

==========================================  ===============================================
MySQL / MariaDB                             Arrow
==========================================  ===============================================
TINYINT(1) / BOOL / BOOLEAN                 bool (non-zero is true)
TINYINT / SMALLINT / MEDIUMINT, INT /       int8 / int16 / int32 / int64; UNSIGNED:
BIGINT                                      uint8 / uint16 / uint32 / uint64
YEAR                                        int16
FLOAT / DOUBLE                              float32 / float64
DECIMAL(p, s), p <= 38                      decimal128(p, s)
DECIMAL(p, s), p > 38                       exportd.decimal_text: the exact digits as
                                            text (cells.py)
CHAR / VARCHAR / TEXT / ENUM / SET / JSON   string (utf8mb4)
BINARY / VARBINARY / BLOB / GEOMETRY        binary
BIT(1) / BIT(n)                             bool / uint64
DATE                                        date32 (zero dates such as 0000-00-00: NULL)
DATETIME                                    timestamp[us] (naive, as stored)
TIMESTAMP                                   timestamp[us, tz=UTC] (session zone +00:00)
TIME                                        time64[us]; negative or >= 24 h fails
NULL literal                                string (all NULL)
==========================================  ===============================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa
import pymysql
from pymysql.constants import FIELD_TYPE, FLAG
from pymysql.converters import conversions
from pymysql.cursors import SSCursor

from exportd.contract.errors import ExportdError, PermanentFailure, TransientFailure
from exportd.exporter.sources import arrowtypes as at
from exportd.exporter.sources.arrowtypes import ColumnPlan
from exportd.exporter.sources.base import QueryOptions
from exportd.exporter.sources.server import ServerSource, dsn_arguments
from exportd.settings import SourceConfig

CONNECT_TIMEOUT_SECONDS = 10
KILL_CONNECT_TIMEOUT_SECONDS = 5
# The server drops a client that reads nothing for this long; a writer between batches is
# well within it, a stalled one is not.
NET_WRITE_TIMEOUT_SECONDS = 600
BINARY_CHARSET = 63
DSN_SCHEMES = {"mysql", "mariadb", "mysql+pymysql"}
DSN_OPTIONS = {"unix_socket", "ssl_ca", "ssl_cert", "ssl_key", "connect_timeout"}
# Encoders only: values leave PyMySQL as the server's text, parsed column-wise by Arrow.
ENCODERS_ONLY = {key: value for key, value in conversions.items() if not isinstance(key, int)}

INTEGER_TYPES: dict[int, tuple[pa.DataType, pa.DataType]] = {
    FIELD_TYPE.TINY: (pa.int8(), pa.uint8()),
    FIELD_TYPE.SHORT: (pa.int16(), pa.uint16()),
    FIELD_TYPE.INT24: (pa.int32(), pa.uint32()),
    FIELD_TYPE.LONG: (pa.int32(), pa.uint32()),
    FIELD_TYPE.LONGLONG: (pa.int64(), pa.uint64()),
    FIELD_TYPE.YEAR: (pa.int16(), pa.int16()),
}
TEXT_TYPES = {
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.VAR_STRING,
    FIELD_TYPE.STRING,
    FIELD_TYPE.TINY_BLOB,
    FIELD_TYPE.MEDIUM_BLOB,
    FIELD_TYPE.LONG_BLOB,
    FIELD_TYPE.BLOB,
    FIELD_TYPE.ENUM,
    FIELD_TYPE.SET,
}
ZERO_DATES = ("0000-00-00",)

# Server error numbers (MySQL and MariaDB share them unless noted).
TRANSIENT_ERRORS = {1040, 1053, 1203, 1205, 1213, 1226, 1927, 2002, 2003, 2005, 2006, 2013, 2055}
AUTH_ERRORS = {1044, 1045, 1130, 1251, 1698}
PERMISSION_ERRORS = {1142, 1143, 1227, 1370}
READ_ONLY_ERRORS = {1207, 1792}
STATEMENT_TIMEOUT_ERRORS = {1969, 3024}  # MariaDB max_statement_time, MySQL max_execution_time
QUERY_INTERRUPTED = 1317
UNKNOWN_DATABASE = 1049


class MySQLSource(ServerSource[SSCursor, pymysql.Error]):
    """One PyMySQL connection; one streamed query at a time."""

    driver_error = pymysql.Error
    cancelled_ending = "killed on the server"
    timeout_ending = "was stopped by the server"

    def __init__(self, arguments: dict[str, Any]) -> None:
        super().__init__()
        self._arguments = arguments
        self._conn = open_connection(arguments)
        self._thread_id: int = self._conn.thread_id()
        self._mariadb = "mariadb" in self._conn.get_server_info().lower()

    @classmethod
    def from_config(cls, config: SourceConfig) -> MySQLSource:
        return cls(connection_arguments(config))

    def close(self) -> None:
        if self._conn.open:
            with contextlib.suppress(pymysql.Error, OSError):
                self._conn.close()

    def _open_cursor(self, options: QueryOptions) -> SSCursor:
        self._reconnect_if_closed()
        self._session(options)
        return self._conn.cursor(SSCursor)

    def _session(self, options: QueryOptions) -> None:
        with self._conn.cursor() as cursor:
            cursor.execute("SET SESSION time_zone = '+00:00'")
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
            cursor.execute("SET SESSION net_write_timeout = %s", (NET_WRITE_TIMEOUT_SECONDS,))
            seconds = options.statement_timeout_seconds
            if self._mariadb:
                cursor.execute("SET SESSION max_statement_time = %s", (seconds,))
            else:
                cursor.execute("SET SESSION max_execution_time = %s", (seconds * 1000,))

    def _driver_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return driver_params(params)

    def _column_plans(self, cursor: SSCursor) -> list[ColumnPlan]:
        # PyMySQL keeps flags and charsets (needed for UNSIGNED and binary) on its result.
        fields = cursor._result.fields if cursor._result else []
        return [column_plan(field) for field in fields]

    def _finish(self, cursor: SSCursor) -> None:
        cursor.close()

    def _release(self, cursor: SSCursor | None, *, finished: bool) -> None:
        if not finished:
            self._abandon(cursor)

    def _abandon(self, cursor: SSCursor | None) -> None:
        """Stop a result that is still streaming: kill the query on the server and drop the
        socket (reading the rest of an unbuffered result would stream all of it)."""
        result = cursor._result if cursor is not None else None
        if result is None or not result.unbuffered_active:
            return  # the statement ended (an SQL error): the connection is fine as it is
        self._stop_query()
        result.unbuffered_active = False  # closing the cursor must not drain the dropped socket
        self._conn._force_close()

    def _stop_query(self) -> None:
        """``KILL QUERY`` from a second, short-lived connection."""
        if not self._conn.open:
            return  # its queries ended with it; the id may already belong to someone else
        arguments = {**self._arguments, "connect_timeout": KILL_CONNECT_TIMEOUT_SECONDS}
        try:
            killer = pymysql.connect(**arguments)
        except pymysql.Error:
            return  # the server is unreachable: the query dies with its connection
        try:
            with killer.cursor() as cursor:
                cursor.execute("KILL QUERY %s", (self._thread_id,))
        except pymysql.Error:
            pass  # the query already ended
        finally:
            with contextlib.suppress(pymysql.Error, OSError):
                killer.close()

    def _reconnect_if_closed(self) -> None:
        if not self._conn.open:
            self._conn = open_connection(self._arguments)
            self._thread_id = self._conn.thread_id()

    def _server_failure(self, exc: pymysql.Error, options: QueryOptions) -> ExportdError:
        code = error_code(exc)
        if code in STATEMENT_TIMEOUT_ERRORS:
            return self._statement_timeout(options)
        if code == QUERY_INTERRUPTED:
            return TransientFailure(
                f"the server interrupted the query: {describe(exc)}", reason="QueryCancelled"
            )
        return classify(exc)


def connection_arguments(config: SourceConfig) -> dict[str, Any]:
    """PyMySQL arguments from ``mysql://user[:password]@host[:port]/database[?options]``."""
    arguments = dsn_arguments(config, "mysql", parse_dsn, (ValueError,))
    arguments.update(charset="utf8mb4", autocommit=True, conv=ENCODERS_ONLY, local_infile=False)
    return arguments


def parse_dsn(dsn: str) -> dict[str, Any]:
    parts = urlsplit(dsn)
    if parts.scheme not in DSN_SCHEMES:
        raise ValueError(f"dsn scheme must be one of {sorted(DSN_SCHEMES)}")
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - DSN_OPTIONS
    if unknown:
        raise ValueError(f"unknown dsn options {sorted(unknown)}; allowed: {sorted(DSN_OPTIONS)}")
    arguments: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")) or None,
        "connect_timeout": int(options.pop("connect_timeout", CONNECT_TIMEOUT_SECONDS)),
    }
    arguments.update(options)
    return arguments


def open_connection(arguments: dict[str, Any]) -> pymysql.Connection[Any]:
    try:
        return pymysql.connect(**arguments)
    except pymysql.Error as exc:
        raise classify(exc) from exc


def driver_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Aware datetimes as naive UTC: the session zone is UTC and MySQL literals carry none."""
    return {
        key: value.astimezone(UTC).replace(tzinfo=None)
        if isinstance(value, datetime) and value.tzinfo is not None
        else value
        for key, value in params.items()
    }


def column_plan(field: Any) -> ColumnPlan:
    name: str = field.name
    kind: int = field.type_code
    unsigned = bool(field.flags & FLAG.UNSIGNED)
    if kind == FIELD_TYPE.TINY and field.length == 1:
        return ColumnPlan(name, pa.bool_(), at.bool_from_integer_text())
    if kind in INTEGER_TYPES:
        arrow_type = INTEGER_TYPES[kind][1 if unsigned else 0]
        return ColumnPlan(name, arrow_type, at.from_text(arrow_type))
    if kind in (FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL):
        precision = decimal_precision(field, unsigned)
        return at.decimal_plan(name, precision, field.scale, text=True)
    if kind in TEXT_TYPES or kind == FIELD_TYPE.GEOMETRY:
        if field.charsetnr == BINARY_CHARSET or kind == FIELD_TYPE.GEOMETRY:
            return at.plan(name, pa.binary())
        return at.plan(name, pa.string())
    return _other_plan(name, kind, field.length)


def _other_plan(name: str, kind: int, length: int) -> ColumnPlan:
    if kind == FIELD_TYPE.FLOAT:
        return ColumnPlan(name, pa.float32(), at.from_text(pa.float32()))
    if kind == FIELD_TYPE.DOUBLE:
        return ColumnPlan(name, pa.float64(), at.from_text(pa.float64()))
    if kind in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return ColumnPlan(name, pa.date32(), at.temporal_from_text(pa.date32(), ZERO_DATES))
    if kind == FIELD_TYPE.DATETIME:
        naive = pa.timestamp("us")
        return ColumnPlan(name, naive, at.temporal_from_text(naive, ZERO_DATES))
    if kind == FIELD_TYPE.TIMESTAMP:
        return ColumnPlan(name, pa.timestamp("us", tz="UTC"), _utc_timestamps())
    if kind == FIELD_TYPE.TIME:
        return ColumnPlan(name, pa.time64("us"), at.time_of_day_from_timedelta_text(name))
    if kind == FIELD_TYPE.BIT:
        if length == 1:
            return ColumnPlan(name, pa.bool_(), at.bool_from_bits())
        return ColumnPlan(name, pa.uint64(), at.unsigned_from_bits())
    return ColumnPlan(name, pa.string(), at.text_of_anything())


def _utc_timestamps() -> at.Builder:
    """The session zone is +00:00, so the naive text is the UTC instant."""
    parse = at.temporal_from_text(pa.timestamp("us"), ZERO_DATES)
    utc = pa.timestamp("us", tz="UTC")

    def build(values: Any) -> pa.Array:
        return parse(values).cast(utc)

    return build


def decimal_precision(field: Any, unsigned: bool) -> int:
    """The declared precision from the display length (digits + sign + decimal point)."""
    length: int = field.length
    return length - (1 if field.scale > 0 else 0) - (0 if unsigned else 1)


def error_code(exc: pymysql.Error) -> int | None:
    code = exc.args[0] if exc.args else None
    return code if isinstance(code, int) else None


def describe(exc: pymysql.Error) -> str:
    code = error_code(exc)
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    return f"{text} (error {code})" if code else text


def classify(exc: pymysql.Error) -> ExportdError:
    """A PyMySQL error as the exporter's taxonomy: transient if a retry may help."""
    code = error_code(exc)
    message = f"MySQL: {describe(exc)}"
    if code in TRANSIENT_ERRORS or isinstance(exc, pymysql.InterfaceError):
        return TransientFailure(message, reason="SourceUnavailable")
    if code in AUTH_ERRORS:
        return PermanentFailure(message, reason="SourceAuthenticationFailed")
    if code == UNKNOWN_DATABASE:
        return PermanentFailure(message, reason="SourceDatabaseMissing")
    if code in PERMISSION_ERRORS:
        return PermanentFailure(message, reason="PermissionDenied")
    if code in READ_ONLY_ERRORS:
        return PermanentFailure(message, reason="ReadOnlyTransaction")
    if isinstance(exc, pymysql.OperationalError) and code is not None and 2000 <= code < 3000:
        return TransientFailure(message, reason="SourceUnavailable")
    return PermanentFailure(message, reason="QueryFailed")
