"""The state store interface: export records that survive a restart of the API.

Embedded mode keeps records in SQLite (:mod:`exportd.store.sqlite`); production will keep them in
PostgreSQL behind the same interface. The interface is async so a PostgreSQL store can use an
async driver; the SQLite store runs its short transactions in a worker thread.

Writes are compare-and-set friendly: :meth:`StateStore.update_status` can require the record's
``version`` or current phase, so two writers (a runner and a cancel request) never overwrite each
other silently. Credits and idempotency keys live in the same store, so a debit, an idempotency
key and the record it creates are written in one transaction (:meth:`StateStore.admit`, rules in
:mod:`exportd.store.admission`), and a record reaching Failed or Cancelled gives its credit back
in the transaction that records the phase.
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from exportd.contract.errors import FieldError, InvalidInput, TransientFailure
from exportd.contract.spec import TERMINAL_PHASES, ExportSpec, ExportStatus, Phase, utc_now
from exportd.settings import ApiSettings

if TYPE_CHECKING:
    from exportd.security.credits import CreditAccount, CreditPolicy
    from exportd.security.links import LinkEvent
    from exportd.store.admission import Admission, Admitted, StoredResponse

LIST_LIMIT_MAX = 100
Clock = Callable[[], datetime]


@dataclass
class StateUnavailable(TransientFailure):
    """The state store cannot be reached now: 503 with ``Retry-After``, nothing was changed
    (a write either committed before the failure or not at all)."""

    reason: str = "StateUnavailable"


class ExportRecord(BaseModel):
    """One export as the store keeps it: the order, where it stands, and runner bookkeeping."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: ExportSpec
    status: ExportStatus = Field(default_factory=ExportStatus)
    owner: str
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    version: int = 1
    pid: int | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def phase(self) -> Phase:
        return self.status.phase

    @classmethod
    def new(cls, spec: ExportSpec, status: ExportStatus | None = None) -> ExportRecord:
        now = utc_now()
        return cls(
            spec=spec,
            status=status or ExportStatus(),
            owner=spec.requested_by,
            created_at=now,
            updated_at=now,
        )


@dataclass(frozen=True)
class ExportPage:
    items: list[ExportRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class PageCursor:
    """Keyset position: the last record of the previous page (newest-first order)."""

    created_at: datetime
    export_id: str

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.export_id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> PageCursor:
        try:
            padded = text + "=" * (-len(text) % 4)
            created, export_id = json.loads(base64.urlsafe_b64decode(padded))
            created_at = datetime.fromisoformat(created)
            if created_at.tzinfo is None or not isinstance(export_id, str):
                raise ValueError("bad cursor")
        except (ValueError, TypeError, binascii.Error):
            raise InvalidInput(
                "invalid cursor", errors=[FieldError("cursor", "not a cursor from this API")]
            ) from None
        return cls(created_at.astimezone(UTC), export_id)

    @classmethod
    def after(cls, record: ExportRecord) -> PageCursor:
        return cls(record.created_at, record.id)


class StateStore(ABC):
    """Persistent export records. Implementations must be safe to share within one event loop."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool:
        """Whether the store answers (``/readyz``)."""

    @abstractmethod
    async def create(self, record: ExportRecord) -> ExportRecord:
        """Insert a new record; :class:`~exportd.contract.errors.Conflict` when the id exists."""

    @abstractmethod
    async def get(self, export_id: str) -> ExportRecord | None: ...

    @abstractmethod
    async def list_for_owner(
        self, owner: str | None, limit: int = 20, cursor: str | None = None
    ) -> ExportPage:
        """The owner's records (everyone's for ``None``), newest first, ``limit`` at a time
        after ``cursor``."""

    @abstractmethod
    async def list_by_phase(self, phases: Collection[Phase]) -> list[ExportRecord]:
        """Records in any of ``phases``, oldest first (the order they were accepted)."""

    @abstractmethod
    async def update_status(
        self,
        export_id: str,
        status: ExportStatus,
        *,
        pid: int | None = None,
        expected_version: int | None = None,
        expected_phases: Collection[Phase] | None = None,
    ) -> ExportRecord | None:
        """Replace the status (and pid) of a record, bumping its version.

        Returns the updated record, or ``None`` when the record does not exist or no longer
        matches ``expected_version`` / ``expected_phases`` (someone else changed it first).
        """

    async def update_many(
        self, updates: Sequence[tuple[str, ExportStatus, int | None]]
    ) -> list[ExportRecord | None]:
        """Several unconditional status updates; stores may batch them in one transaction."""
        return [await self.update_status(i, status, pid=pid) for i, status, pid in updates]

    # -- housekeeping: finished records past their retention (exportd.ops.housekeeping) -----------

    async def list_finished(
        self, created_before: datetime, limit: int = 500, after: PageCursor | None = None
    ) -> list[ExportRecord]:
        """Terminal records created before ``created_before``, oldest first (created_at, id),
        at most ``limit`` of them after ``after``. Stores should override this generic version
        (it reads every terminal record) with one indexed query."""
        records = [
            record
            for record in await self.list_by_phase(TERMINAL_PHASES)
            if record.created_at < created_before
            and (
                after is None
                or (record.created_at, record.id) > (after.created_at, after.export_id)
            )
        ]
        return records[:limit]

    async def delete_finished(self, export_id: str, version: int) -> bool:
        """Delete a terminal record that is still at ``version`` (compare-and-delete, so two
        housekeeping runs delete it once); ``False`` when it changed or is already gone."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete records yet")

    # -- handle links: the download audit log and revocations (exportd.security.links)
    # -----------------

    async def add_link_event(self, event: LinkEvent) -> None:
        """Append one download or revocation to the audit log."""
        raise NotImplementedError(f"{type(self).__name__} keeps no link events")

    async def link_events(self, export_id: str) -> list[LinkEvent]:
        """The export's downloads and revocations, oldest first."""
        raise NotImplementedError(f"{type(self).__name__} keeps no link events")

    async def revoked_at(self, export_id: str) -> datetime | None:
        """When the export's links were first revoked; ``None`` while they work."""
        raise NotImplementedError(f"{type(self).__name__} keeps no link events")

    # -- admission: idempotency keys, queue limits, credits ---------------------------------

    @abstractmethod
    async def admit(self, admission: Admission) -> Admitted:
        """Claim the idempotency key, check the queue, debit and insert the record, in one
        transaction; raise (and leave nothing behind) to refuse. See
        :func:`exportd.store.admission.admit`."""

    @abstractmethod
    async def credit_account(
        self, owner: str, policy: CreditPolicy, now: datetime
    ) -> CreditAccount:
        """The owner's account as of ``now`` (accrued; opening balance if never seen)."""

    @abstractmethod
    async def refund(self, export_id: str) -> bool:
        """Give back the credit the export took; once only (``False`` after that)."""

    @abstractmethod
    async def complete_key(self, owner: str, key: str, response: StoredResponse) -> None:
        """Store the response of a claimed idempotency key, to be replayed."""

    @abstractmethod
    async def release_key(self, owner: str, key: str) -> None:
        """Forget a pending claim whose request ended before creating anything."""

    @abstractmethod
    async def purge_expired_keys(self, now: datetime) -> int:
        """Delete idempotency keys past their expiry; how many were deleted."""


def clamp_limit(limit: int) -> int:
    return max(1, min(limit, LIST_LIMIT_MAX))


def store_from_settings(settings: ApiSettings, *, clock: Clock | None = None) -> StateStore:
    """The store named by ``state_db_url``: ``sqlite:///path`` or ``postgresql://...``; SQLite
    under data_dir by default. Credits are refunded by the policy of ``settings``."""
    from exportd.security.credits import CreditPolicy

    policy = CreditPolicy.from_settings(settings)
    now = clock or utc_now
    url = settings.state_db_url
    if url is not None and url.startswith(("postgresql://", "postgres://")):
        from exportd.store.postgres import PostgresStateStore

        return PostgresStateStore(url, credit_policy=policy, clock=now)
    from exportd.store.sqlite import SqliteStateStore

    if url is None:
        return SqliteStateStore(settings.state_db_path, credit_policy=policy, clock=now)
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///") or settings.state_db_path
        return SqliteStateStore(path, credit_policy=policy, clock=now)
    scheme = url.split(":", 1)[0]
    raise ValueError(f"unsupported state_db_url {scheme!r}: use sqlite:/// or postgresql://")
