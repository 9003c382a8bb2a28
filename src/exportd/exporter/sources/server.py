"""What the PostgreSQL and MySQL sources do alike: one server query streamed through a cursor.

Both sources hold one connection to a database server and read one query at a time through a
cursor that leaves the result on the server (a named cursor, an unbuffered one). Everything
around that cursor is the same for both and is written here once: refuse to start after a
cancel, execute with bound parameters, fetch rows into Arrow batches of at most ``batch_rows``
rows and about ``batch_bytes`` (an empty result still yields its schema), check for a cancel
between batches, turn driver errors into the exporter's taxonomy, and always release the cursor.
A server module supplies only what differs: how its session and cursor are opened, how its
columns map to Arrow, how a query is stopped on the server, and what its error codes mean.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import pyarrow as pa

from exportd.contract.errors import Cancelled, ExportdError, PermanentFailure
from exportd.contract.sqlparams import to_pyformat
from exportd.exporter.sources.arrowtypes import ColumnPlan, empty_batch, rows_to_batch
from exportd.exporter.sources.base import (
    FIRST_BATCH_ROWS,
    QueryOptions,
    Source,
    next_batch_rows,
)
from exportd.settings import SourceConfig


class Cursor(Protocol):
    """The part of a DB-API cursor the shared streaming loop uses."""

    def execute(self, query: str, params: dict[str, Any], /) -> object: ...

    def fetchmany(self, size: int, /) -> Sequence[Sequence[Any]]: ...


CursorT = TypeVar("CursorT", bound=Cursor)
ErrorT = TypeVar("ErrorT", bound=Exception)


class ServerSource(Source, Generic[CursorT, ErrorT]):
    """One connection to a database server; one streamed query at a time."""

    # The driver's base error: only these are classified, anything else passes through as is.
    driver_error: type[ErrorT]
    # How a query stopped by ``cancel`` ended, and how one past its timeout did, for messages.
    cancelled_ending: str
    timeout_ending: str

    def __init__(self) -> None:
        self._cancel_requested = False

    def stream(
        self, sql: str, params: Mapping[str, Any], options: QueryOptions
    ) -> Iterator[pa.RecordBatch]:
        self._raise_if_cancelled()
        cursor: CursorT | None = None
        finished = False
        try:
            cursor = self._open_cursor(options)
            cursor.execute(to_pyformat(sql), self._driver_params(params))
            yield from self._batches(cursor, options)
            self._finish(cursor)
            finished = True
        except self.driver_error as exc:
            raise self._query_failure(exc, options) from exc
        finally:
            self._release(cursor, finished=finished)

    def cancel(self) -> None:
        """Stop the running query on the server (safe from another thread)."""
        self._cancel_requested = True
        self._stop_query()

    def _batches(self, cursor: CursorT, options: QueryOptions) -> Iterator[pa.RecordBatch]:
        plans = self._column_plans(cursor)
        sent_any = False
        size = min(options.batch_rows, FIRST_BATCH_ROWS)  # then sized by what rows weigh
        while True:
            self._raise_if_cancelled()
            rows = cursor.fetchmany(size)
            if not rows:
                break
            sent_any = True
            batch = rows_to_batch(rows, plans)
            del rows  # the Python rows: as large as the batch, not needed while it is written
            yield batch
            size = next_batch_rows(batch, options)
        if not sent_any:
            yield empty_batch(plans)

    def _cancelled(self) -> Cancelled:
        return Cancelled(f"the export was cancelled; its query was {self.cancelled_ending}")

    def _raise_if_cancelled(self) -> None:
        if self._cancel_requested:
            raise self._cancelled()

    def _query_failure(self, exc: ErrorT, options: QueryOptions) -> ExportdError:
        # After a cancel the server reports the stopped query as an error of its own kind.
        if self._cancel_requested:
            return self._cancelled()
        return self._server_failure(exc, options)

    def _statement_timeout(self, options: QueryOptions) -> PermanentFailure:
        return PermanentFailure(
            f"the query ran longer than its statement timeout of "
            f"{options.statement_timeout_seconds} s and {self.timeout_ending}",
            reason="StatementTimeout",
        )

    def _driver_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return dict(params)

    def _finish(self, cursor: CursorT) -> None:
        """Work after the last batch whose driver errors still count as the query's."""

    @abstractmethod
    def _open_cursor(self, options: QueryOptions) -> CursorT:
        """Start the read-only session for one query and return the cursor it runs in."""

    @abstractmethod
    def _column_plans(self, cursor: CursorT) -> list[ColumnPlan]: ...

    @abstractmethod
    def _release(self, cursor: CursorT | None, *, finished: bool) -> None:
        """Leave the connection ready for the next query, however this one ended."""

    @abstractmethod
    def _stop_query(self) -> None: ...

    @abstractmethod
    def _server_failure(self, exc: ErrorT, options: QueryOptions) -> ExportdError:
        """A driver error (not caused by ``cancel``) as the exporter's taxonomy."""


def dsn_arguments(
    config: SourceConfig,
    kind: str,
    parse: Callable[[str], dict[str, Any]],
    parse_errors: tuple[type[Exception], ...],
) -> dict[str, Any]:
    """The driver's arguments from the configured DSN, with the password from its secret."""
    if config.dsn is None:
        raise PermanentFailure(f"a {kind} source needs a dsn", reason="SourceConfigInvalid")
    unusable: tuple[type[Exception], ...] = (*parse_errors, OSError)  # OSError: password file
    try:
        arguments = parse(config.dsn.get_secret_value())
        password = config.resolved_password()
    except unusable as exc:
        raise PermanentFailure(
            f"{kind} source configuration is unusable: {exc}", reason="SourceConfigInvalid"
        ) from exc
    if password is not None:
        arguments["password"] = password
    return arguments
