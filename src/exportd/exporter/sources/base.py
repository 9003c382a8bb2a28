"""The source interface: one database, one catalog query at a time, rows as Arrow batches.

Arrow record batches are the exchange format between sources and writers: each column has one
precise type (int64, decimal128, timestamp with zone, ...), so the mapping to spreadsheet cells
is written once, in the writers, for every source alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

FIRST_BATCH_ROWS = 100
BATCH_BYTES = 4 * 1024 * 1024  # 50k rows of 40 kB texts: 535 MiB peak in 10,000-row batches, 250 so


@dataclass(frozen=True)
class QueryOptions:
    batch_rows: int = 10_000  # at most; fewer where rows are large (see next_batch_rows)
    statement_timeout_seconds: int = 300
    batch_bytes: int = BATCH_BYTES


def rows_within(row_bytes: int, most_rows: int, budget_bytes: int) -> int:
    """How many rows of ``row_bytes`` each fit in ``budget_bytes``: at least 1, at most
    ``most_rows``. 10,000 rows of 40 kB texts would be 400 MB in one batch, and the writer's
    queues hold several."""
    return max(1, min(most_rows, budget_bytes // max(1, row_bytes)))


def coalesced(batches: Iterable[pa.RecordBatch], options: QueryOptions) -> Iterator[pa.RecordBatch]:
    """Small batches (a reader's vectors, each at most ``batch_rows``) joined into batches of
    at most ``batch_rows`` rows and about ``batch_bytes``, so large rows make small batches."""
    pending: list[pa.RecordBatch] = []
    rows = size = 0
    for batch in batches:
        if pending and rows + batch.num_rows > options.batch_rows:
            yield _joined(pending)
            pending, rows, size = [], 0, 0
        pending.append(batch)
        rows += batch.num_rows
        size += batch.nbytes
        if size >= options.batch_bytes:
            yield _joined(pending)
            pending, rows, size = [], 0, 0
    if pending:
        yield _joined(pending)


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def next_batch_rows(batch: pa.RecordBatch, options: QueryOptions) -> int:
    """Rows to fetch next so a batch holds about ``batch_bytes``, never more than
    ``batch_rows``."""
    row_bytes = batch.nbytes // max(1, batch.num_rows)
    return rows_within(row_bytes, options.batch_rows, options.batch_bytes)


class Source(ABC):
    """An open connection to one configured database."""

    @abstractmethod
    def stream(
        self, sql: str, params: Mapping[str, Any], options: QueryOptions
    ) -> Iterator[pa.RecordBatch]:
        """Run ``sql`` (``:name`` placeholders) read-only with bound ``params``; yield batches.

        The first batch carries the schema even when the result is empty. The whole result is
        never held in memory.
        """

    @abstractmethod
    def cancel(self) -> None:
        """Cancel the running query on the server; safe to call from another thread."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
