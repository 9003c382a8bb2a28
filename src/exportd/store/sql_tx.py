"""What differs between the two SQL databases, as a small interface both stores' statements use.

SQLite and PostgreSQL keep the same tables (:mod:`exportd.store.migrations`), so their statements
differ only in how values travel (text stamps and JSON text in SQLite, ``TIMESTAMPTZ`` and
``JSONB`` in PostgreSQL), in a few SQL spellings (a list of phases, a keyset comparison, "now")
and in how rows are locked. :class:`SqlTx` names exactly those differences; the statements
themselves are written once, over it, in :mod:`exportd.store.sql_statements`.

Statements are written with ``?`` marks; a driver that wants another style rewrites them in
:meth:`SqlTx.run`, so shared SQL must hold no literal ``?`` or ``%``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from exportd.contract.spec import CamelModel, ExportSpec, ExportStatus
from exportd.security.credits import CreditAccount
from exportd.store.admission import IdempotencyEntry, StoredResponse
from exportd.store.base import ExportRecord, PageCursor

# sqlite3.Row or psycopg's dict row: both are read by column name.
Row = Any
Fragment = tuple[str, list[object]]  # a piece of SQL and the values of its marks
Model = TypeVar("Model", bound=CamelModel)

COLUMNS = "id, owner, phase, spec, status, created_at, updated_at, version, pid"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SqlTx(ABC):
    """One open connection of a store (inside a transaction for writes) and its SQL dialect."""

    # Appended to the SELECT of a row that a decision is made on, to hold it until commit.
    row_lock: ClassVar[str] = ""
    # A text parameter that may be NULL (PostgreSQL cannot infer the type of a bare one).
    text_mark: ClassVar[str] = "?"
    # How many of the selected rows the owner ``?`` has, as a column named ``mine``.
    owned_count: ClassVar[str]

    @abstractmethod
    def run(self, sql: str, params: Sequence[object] | None = None) -> Cursor: ...

    def one(self, sql: str, params: Sequence[object] | None = None) -> Row | None:
        return self.run(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[object] | None = None) -> list[Row]:
        return self.run(sql, params).fetchall()

    # -- the dialect ------------------------------------------------------------------------

    @abstractmethod
    def stamp(self, moment: datetime) -> object:
        """A moment as a parameter."""

    @abstractmethod
    def unstamp(self, value: Any) -> datetime:
        """A stored moment, in UTC."""

    def event_time(self, value: Any) -> datetime:
        """A stored link event time, as the store has always returned it."""
        return self.unstamp(value)

    @abstractmethod
    def model_value(self, model: CamelModel) -> object: ...

    @abstractmethod
    def model_of(self, cls: type[Model], value: Any) -> Model: ...

    @abstractmethod
    def json_value(self, data: dict[str, str]) -> object: ...

    @abstractmethod
    def json_of(self, value: Any) -> dict[str, str]: ...

    @abstractmethod
    def now(self) -> Fragment:
        """The current time, for a column being written."""

    @abstractmethod
    def phase_in(self, phases: Collection[str]) -> Fragment:
        """The condition that ``phase`` is one of ``phases``."""

    @abstractmethod
    def keyset(self, op: Literal["<", ">"], position: PageCursor) -> Fragment:
        """The condition that ``(created_at, id)`` is ``op`` the position."""

    @abstractmethod
    def updated(self, sql: str, params: Sequence[object], export_id: str) -> ExportRecord | None:
        """Run an UPDATE of the export; its record after, ``None`` when nothing matched."""

    @abstractmethod
    def lock_admissions(self) -> None:
        """Keep other admissions out until commit (queue limits count over many rows)."""

    # -- rows -------------------------------------------------------------------------------

    def record_of(self, row: Row) -> ExportRecord:
        return ExportRecord(
            spec=self.model_of(ExportSpec, row["spec"]),
            status=self.model_of(ExportStatus, row["status"]),
            owner=row["owner"],
            created_at=self.unstamp(row["created_at"]),
            updated_at=self.unstamp(row["updated_at"]),
            version=row["version"],
            pid=row["pid"],
        )

    def record_values(self, record: ExportRecord) -> tuple[object, ...]:
        return (
            record.id,
            record.owner,
            record.phase.value,
            self.model_value(record.spec),
            self.model_value(record.status),
            self.stamp(record.created_at),
            self.stamp(record.updated_at),
            record.version,
            record.pid,
        )

    def entry_of(self, row: Row) -> IdempotencyEntry:
        response = None
        if row["response_status"] is not None:
            response = StoredResponse(
                status=row["response_status"],
                body=row["response_body"],
                headers=self.json_of(row["response_headers"]),
            )
        return IdempotencyEntry(
            owner=row["owner"],
            key=row["key"],
            request_hash=row["request_hash"],
            export_id=row["export_id"],
            state=row["state"],
            created_at=self.unstamp(row["created_at"]),
            expires_at=self.unstamp(row["expires_at"]),
            response=response,
        )

    def account_of(self, row: Row) -> CreditAccount:
        return CreditAccount(row["owner"], row["balance"], self.unstamp(row["accrued_at"]))
