"""PostgreSQL rows into Arrow at COPY speed, through DuckDB's postgres scanner.

Why: the psycopg source turns every row into Python objects (about 3 s per million rows of ten
columns), which is most of a fast XLSX export's time. DuckDB's postgres extension reads the
query's binary COPY stream in C++ straight into Arrow (about 1 s, on another core than the
writer's). It runs the catalog query as written through ``postgres_query``, one COPY on one
connection, so the query's ORDER BY is kept (a table scan through the extension would not keep it).

Safety is that of the psycopg source: parameters are bound client-side by psycopg (its literal
quoting, the same binding ``cursor.copy(sql, params)`` uses), and the scanner's connection is
opened with ``default_transaction_read_only=on``, the export's ``statement_timeout`` and
``TimeZone=UTC`` as libpq options. DuckDB itself loads nothing but this extension, from the
installed PyPI wheel ``duckdb-extension-postgres`` (nothing is downloaded), and its
configuration is locked before the query runs.

The result's column types are checked first (``LIMIT 0``, server-side binding). Only types whose
Arrow form is identical to :class:`exportd.exporter.sources.postgres.PostgresSource` take the
fast path; anything else (numeric without precision, char(n), json, arrays, ...) is streamed by
that source instead, so a file never depends on which path read it.

Small results skip DuckDB: the type check runs the query with ``LIMIT SMALL_RESULT_ROWS + 1``
instead of ``LIMIT 0``, its rows read in steps by a server-side cursor. When the whole result came
back in that probe, its rows are turned into Arrow exactly as :class:`PostgresSource` does (same
connection, loaders and column plans), so the query runs once and DuckDB is neither imported nor
started (measured: importing DuckDB, loading the extension and ATTACH cost ~0.35 s and ~40 MiB,
more than reading 5,000 rows through psycopg). A larger result costs the probe's rows once more
(a few milliseconds), then streams as before, in batches sized by the probe's rows to about
``batch_bytes``. The probe stops at ``batch_bytes`` too: 5,000 rows of 40 kB texts are a large
result, not a small one read whole (measured: 852 MiB peak RSS when they were), and rows over
``DUCKDB_MAX_ROW_BYTES`` are streamed by :class:`PostgresSource`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
from psycopg.conninfo import make_conninfo

from exportd.contract.errors import Cancelled, ExportdError, PermanentFailure, TransientFailure
from exportd.contract.sqlparams import to_pyformat
from exportd.exporter.sources.arrowtypes import empty_batch, rows_to_batch
from exportd.exporter.sources.base import QueryOptions, Source, rows_within
from exportd.exporter.sources.postgres import (
    PostgresSource,
    classify,
    column_plan,
    connect,
    connection_arguments,
)
from exportd.settings import SourceConfig

if TYPE_CHECKING:
    import duckdb

FAST_BATCH_ROWS = 16_384  # measured: 65,536 costs ~25 MiB more peak RSS, no time
DUCKDB_THREADS = 1  # one COPY stream; the other core builds and deflates the sheet
DUCKDB_MEMORY_LIMIT = "192MB"
NUMERIC_OID = 1700
SMALL_RESULT_ROWS = 5_000  # read whole by the type probe: no DuckDB start-up (~0.35 s)
PROBE_STEP_ROWS = 500
# DuckDB's scanner reads 2,048 rows at a time and holds several such vectors (measured: 5,000
# rows of 40 kB texts peaked at 405 MiB just reading). Larger rows go through PostgresSource,
# whose batches are sized in bytes (such rows are mostly long texts, where per-value Python
# costs little next to the bytes).
DUCKDB_MAX_ROW_BYTES = 8 * 1024
MAX_DECIMAL_PRECISION = 38
# bool, int8, int2, int4, text, float4, float8, varchar, date, timestamp, timestamptz
FAST_TYPE_OIDS = frozenset({16, 20, 21, 23, 25, 700, 701, 1043, 1082, 1114, 1184})
_LIBPQ_ONLY = {"autocommit"}


def extension_file() -> Path:
    """The postgres extension binary shipped in the ``duckdb-extension-postgres`` wheel."""
    import duckdb

    try:
        import duckdb_extension_postgres  # type: ignore[import-untyped]
    except ImportError as exc:
        raise PermanentFailure(
            "the fast PostgreSQL path needs the duckdb-extension-postgres package",
            reason="MissingDependency",
        ) from exc
    root = Path(duckdb_extension_postgres.__file__).parent / "extensions"
    found = sorted(root.glob(f"v{duckdb.__version__}/*.duckdb_extension"))
    if not found:
        raise PermanentFailure(
            f"duckdb-extension-postgres has no build for duckdb {duckdb.__version__}",
            reason="MissingDependency",
        )
    return found[0]


def fast_path_supported(description: list[psycopg.Column]) -> bool:
    """Whether every result column reads into the same Arrow type through DuckDB."""
    for column in description:
        if column.type_code == NUMERIC_OID:
            if column.precision is None or column.precision > MAX_DECIMAL_PRECISION:
                return False
        elif column.type_code not in FAST_TYPE_OIDS:
            return False
    return True


def strip_statement(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


@dataclass
class Probe:
    """What the type probe learned: the columns, the first rows, whether they are all."""

    description: list[psycopg.Column]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    size: int = 0  # the rows' rough bytes: text and binary lengths, 8 per other value
    complete: bool = False  # the whole result is in ``rows``

    def take(self, chunk: list[tuple[Any, ...]], wanted: int) -> None:
        self.rows.extend(chunk)
        self.size += sum(
            len(value) if isinstance(value, str | bytes) else 8 for row in chunk for value in row
        )
        self.complete = len(chunk) < wanted  # the result ended

    @property
    def row_bytes(self) -> int:
        return self.size // max(1, len(self.rows))


class PostgresArrowSource(Source):
    """A PostgreSQL source reading through DuckDB when the result's types allow it."""

    def __init__(
        self,
        config: SourceConfig,
        connection: psycopg.Connection[Any],
        small_result_rows: int = SMALL_RESULT_ROWS,
    ) -> None:
        self._config = config
        self._small_rows = small_result_rows
        self._conn = connection
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._workdir: Path | None = None
        self._cancelled = False
        self.used_fast_path = False
        self.used_small_path = False

    @classmethod
    def from_config(
        cls, config: SourceConfig, small_result_rows: int = SMALL_RESULT_ROWS
    ) -> PostgresArrowSource:
        return cls(config, connect(config), small_result_rows)

    def stream(
        self, sql: str, params: Mapping[str, Any], options: QueryOptions
    ) -> Iterator[pa.RecordBatch]:
        query = to_pyformat(strip_statement(sql))
        probe = self._probe(query, params, options)
        if self._small_rows > 0 and probe.complete:
            self.used_small_path = True
            plans = [column_plan(column) for column in probe.description]
            yield rows_to_batch(probe.rows, plans) if probe.rows else empty_batch(plans)
            return
        if not fast_path_supported(probe.description) or probe.row_bytes > DUCKDB_MAX_ROW_BYTES:
            yield from PostgresSource(self._conn).stream(sql, params, options)
            return
        self.used_fast_path = True
        names = [column.name for column in probe.description]
        literal_sql = psycopg.ClientCursor(self._conn).mogrify(query, dict(params))
        most = max(options.batch_rows, FAST_BATCH_ROWS)
        batch_rows = rows_within(probe.row_bytes, most, options.batch_bytes) if probe.rows else most
        yield from self._scan(literal_sql, names, batch_rows, options)

    def _probe(self, query: str, params: Mapping[str, Any], options: QueryOptions) -> Probe:
        """The result's columns, and its first rows up to ``small_result_rows + 1`` or
        ``batch_bytes``, whichever comes first (in the session :class:`PostgresSource` reads
        in: read-only, the statement timeout, UTC). A server-side cursor hands them over in
        steps, so a result of long texts is never read whole to learn that it is large."""
        limit = self._small_rows + 1 if self._small_rows > 0 else 0
        try:
            with self._conn.cursor() as session:
                timeout = f"{options.statement_timeout_seconds * 1000}ms"
                session.execute(
                    "SELECT set_config('statement_timeout', %s, true),"
                    " set_config('TimeZone', 'UTC', true)",
                    [timeout],
                )
            with self._conn.cursor(name="exportd_probe") as cursor:
                cursor.execute(f"SELECT * FROM ({query}) AS exportd_q LIMIT {limit}", dict(params))
                probe = Probe(list(cursor.description or []))
                while not probe.complete and len(probe.rows) < limit:
                    if probe.size >= options.batch_bytes:
                        break  # large rows: no need to read more to know it is no small result
                    wanted = min(PROBE_STEP_ROWS, limit - len(probe.rows))
                    probe.take(cursor.fetchmany(wanted), wanted)
                return probe
        except psycopg.Error as exc:
            if self._cancelled:
                raise Cancelled("the export was cancelled; its query was cancelled") from exc
            if "statement timeout" in (exc.diag.message_primary or ""):
                raise _statement_timeout(options) from exc
            raise classify(exc) from exc
        finally:
            if not self._conn.closed and not self._conn.broken:
                self._conn.rollback()

    def _scan(
        self, literal_sql: str, names: list[str], batch_rows: int, options: QueryOptions
    ) -> Iterator[pa.RecordBatch]:
        import duckdb

        duck = self._open_duckdb(options)
        try:
            # A quoted literal, not a DuckDB parameter: binding a Python parameter makes DuckDB
            # import pandas when it is installed (+60 MiB, +0.7 s). Doubling quotes is all a
            # standard SQL string needs; psycopg already bound the values inside it.
            result = duck.execute(
                f"SELECT * FROM postgres_query('pg', '{_sql_string(literal_sql)}')"
            )
            reader = result.to_arrow_reader(batch_rows)
            schema = pa.schema(
                [field.with_name(name) for field, name in zip(reader.schema, names, strict=True)]
            )
            sent_any = False
            for batch in reader:
                sent_any = True
                yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
            if not sent_any:
                yield pa.RecordBatch.from_pylist([], schema=schema)
        except duckdb.Error as exc:
            raise self._failure(exc, options) from exc

    def _open_duckdb(self, options: QueryOptions) -> duckdb.DuckDBPyConnection:
        import duckdb

        self._workdir = Path(tempfile.mkdtemp(prefix="exportd-pgarrow-"))
        link = self._workdir / "postgres_scanner.duckdb_extension"
        link.symlink_to(extension_file())
        duck = duckdb.connect(
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "extension_directory": str(self._workdir / "extensions"),
                "threads": DUCKDB_THREADS,
                "memory_limit": DUCKDB_MEMORY_LIMIT,
            }
        )
        self._duck = duck
        duck.execute(f"LOAD '{_sql_string(str(link))}'")
        duck.execute("SET TimeZone = 'UTC'")
        conninfo = self._scanner_conninfo(options)
        duck.execute(f"ATTACH '{_sql_string(conninfo)}' AS pg (TYPE postgres, READ_ONLY)")
        duck.execute("SET lock_configuration = true")
        return duck

    def _scanner_conninfo(self, options: QueryOptions) -> str:
        arguments = {
            key: value
            for key, value in connection_arguments(self._config).items()
            if key not in _LIBPQ_ONLY
        }
        timeout_ms = options.statement_timeout_seconds * 1000
        arguments["options"] = (
            f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms} -c TimeZone=UTC"
        )
        return make_conninfo("", **arguments)

    def _failure(self, exc: duckdb.Error, options: QueryOptions) -> ExportdError:
        import duckdb

        if self._cancelled:
            return Cancelled("the export was cancelled; its query was cancelled")
        text = " ".join(str(exc).split())
        if "statement timeout" in text:
            return _statement_timeout(options)
        if isinstance(exc, duckdb.IOException | duckdb.ConnectionException):
            return TransientFailure(f"PostgreSQL (fast path): {text}", reason="SourceUnavailable")
        return PermanentFailure(f"PostgreSQL (fast path): {text}", reason="QueryFailed")

    def cancel(self) -> None:
        self._cancelled = True
        if self._duck is not None:
            self._duck.interrupt()
        with contextlib.suppress(psycopg.Error):  # nothing running on the describing connection
            self._conn.cancel()

    def close(self) -> None:
        if self._duck is not None:
            self._duck.close()
            self._duck = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._conn.close()


def _statement_timeout(options: QueryOptions) -> PermanentFailure:
    return PermanentFailure(
        f"the query ran longer than its statement timeout of "
        f"{options.statement_timeout_seconds} s and was cancelled on the server",
        reason="StatementTimeout",
    )


def _sql_string(text: str) -> str:
    """Inside a single-quoted SQL literal (DuckDB's ATTACH and LOAD take no parameters)."""
    return text.replace("'", "''")
