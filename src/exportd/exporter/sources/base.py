"""The source interface: one database, one catalog query at a time, rows as Arrow batches.

Arrow record batches are the exchange format between sources and writers: each column has one
precise type (int64, decimal128, timestamp with zone, ...), so the mapping to spreadsheet cells
is written once, in the writers, for every source alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class QueryOptions:
    batch_rows: int = 10_000
    statement_timeout_seconds: int = 300


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
