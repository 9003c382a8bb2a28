"""DuckDB source: the embedded sample database (and any DuckDB file) read safely as Arrow.

The file is opened read-only with external access disabled, extension auto-install/auto-load off,
a private extension directory, and the configuration locked, so a catalog query can neither read
other files nor switch those protections back on. Rows stream out of DuckDB as Arrow batches; the
whole result never sits in memory. A timer thread enforces the statement timeout by interrupting
the connection, which is also how ``cancel`` reaches the running query.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from exportd.contract.errors import Cancelled, ExportdError, PermanentFailure, TransientFailure
from exportd.contract.sqlparams import to_dollar
from exportd.exporter.sources.base import QueryOptions, Source, coalesced
from exportd.settings import SourceConfig

WATCH_INTERVAL_SECONDS = 0.05
VECTOR_ROWS = 2_048  # DuckDB's vector: the reader's batches cost no more than its own chunks
EXTENSION_DIRECTORY = Path(tempfile.gettempdir()) / "exportd-duckdb-extensions"


def hardened_config() -> dict[str, Any]:
    """Connection options; ``lock_configuration`` comes last so it freezes the others."""
    return {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "extension_directory": str(EXTENSION_DIRECTORY),
        "lock_configuration": True,
    }


class DuckDBSource(Source):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._con = _connect_read_only(path)
        self._cancelled = threading.Event()
        self._timed_out = threading.Event()

    @classmethod
    def from_config(cls, config: SourceConfig) -> DuckDBSource:
        if config.path is None:
            raise PermanentFailure("DuckDB source has no path configured", reason="SourceConfig")
        return cls(config.path)

    def stream(
        self, sql: str, params: Mapping[str, Any], options: QueryOptions
    ) -> Iterator[pa.RecordBatch]:
        done = threading.Event()
        deadline = time.monotonic() + options.statement_timeout_seconds
        watchdog = threading.Thread(
            target=self._watch, args=(done, deadline), name="duckdb-watchdog", daemon=True
        )
        watchdog.start()
        try:
            yield from self._run(sql, params, options)
        finally:
            done.set()
            watchdog.join()

    def _run(
        self, sql: str, params: Mapping[str, Any], options: QueryOptions
    ) -> Iterator[pa.RecordBatch]:
        try:
            self._con.execute(to_dollar(sql), dict(params))
            # Read one vector at a time and join them up to the options' rows or bytes: a
            # reader asked for 10,000 rows of 40 kB texts builds 400 MB batches.
            with self._con.to_arrow_reader(min(VECTOR_ROWS, options.batch_rows)) as reader:
                schema_sent = False
                for batch in coalesced(reader, options):
                    schema_sent = True
                    yield batch
                if not schema_sent:
                    yield pa.RecordBatch.from_pylist([], schema=reader.schema)
        except (duckdb.Error, pa.ArrowException, RuntimeError, OSError) as exc:
            # Errors raised while Arrow pulls batches arrive wrapped as OSError/RuntimeError.
            raise self._translate(exc) from exc
        if self._cancelled.is_set():
            raise Cancelled("the export was cancelled")

    def _watch(self, done: threading.Event, deadline: float) -> None:
        """Interrupt on cancel or past the deadline, and keep interrupting until the stream
        ends: an interrupt that lands just before the query starts would otherwise be lost."""
        while not done.wait(WATCH_INTERVAL_SECONDS):
            if time.monotonic() >= deadline and not self._cancelled.is_set():
                self._timed_out.set()
            if self._cancelled.is_set() or self._timed_out.is_set():
                self._interrupt()

    def cancel(self) -> None:
        self._cancelled.set()
        self._interrupt()

    def _interrupt(self) -> None:
        with contextlib.suppress(duckdb.ConnectionException):  # already closed: nothing runs
            self._con.interrupt()

    def close(self) -> None:
        # A query left unfinished (the consumer stopped early) must not keep running.
        self._interrupt()
        self._con.close()

    def _translate(self, exc: Exception) -> ExportdError:
        if self._cancelled.is_set():
            return Cancelled("the export was cancelled")
        if self._timed_out.is_set():
            return PermanentFailure(
                "the query ran longer than its statement timeout", reason="StatementTimeout"
            )
        if isinstance(exc, duckdb.IOException) or str(exc).startswith("IO Error"):
            return TransientFailure(f"DuckDB I/O error: {exc}", reason="SourceUnavailable")
        return PermanentFailure(f"query failed: {exc}", reason="QueryError")


def _connect_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    EXTENSION_DIRECTORY.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path), read_only=True, config=hardened_config())
    except duckdb.IOException as exc:
        # Missing (not created yet) or locked by a writer: both may clear up on a retry.
        raise TransientFailure(
            f"cannot open DuckDB database {path}: {exc}", reason="SourceUnavailable"
        ) from exc
    except duckdb.Error as exc:
        raise PermanentFailure(
            f"cannot open DuckDB database {path}: {exc}", reason="SourceConfig"
        ) from exc
