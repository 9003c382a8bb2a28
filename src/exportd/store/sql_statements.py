"""Every statement the SQL stores run, written once over the dialect of :class:`SqlTx`.

:class:`StoreTx` is also the :class:`~exportd.store.admission.AdmissionTx` of both stores. Its
writes assume they run inside the store's write transaction: in SQLite ``BEGIN IMMEDIATE``
excludes every other writer; in PostgreSQL the rows a decision rests on are locked
(``row_lock``) after an ``INSERT ... ON CONFLICT DO NOTHING`` made sure they exist, so concurrent
debits of one account queue on its row and each sees the balance the previous one left.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from exportd.contract.spec import TERMINAL_PHASES, ExportStatus
from exportd.security.credits import CreditAccount
from exportd.security.links import LinkEvent
from exportd.store.admission import IdempotencyEntry, LedgerKind, StoredResponse
from exportd.store.base import ExportRecord, PageCursor
from exportd.store.migrations import Migration
from exportd.store.schedules import ScheduleTx
from exportd.store.sql_tx import COLUMNS

IN_FLIGHT = ("Pending", "Queued", "Running")
TERMINAL = sorted(phase.value for phase in TERMINAL_PHASES)
_KEY_COLUMNS = (
    "owner, key, request_hash, export_id, state, response_status, response_body, "
    "response_headers, created_at, expires_at"
)
_LINK_COLUMNS = "export_id, kind, actor, via, client_ip, user_agent, at"


@dataclass(frozen=True)
class StatusChange:
    """A new status (and pid) for an export, on the condition that it is still at
    ``expected_version`` / in one of ``expected_phases`` where those are given."""

    export_id: str
    status: ExportStatus
    pid: int | None = None
    expected_version: int | None = None
    expected_phases: list[str] | None = None


class StoreTx(ScheduleTx):  # ScheduleTx: the schedules' statements
    # -- records ----------------------------------------------------------------------------

    def get_record(self, export_id: str) -> ExportRecord | None:
        row = self.one(f"SELECT {COLUMNS} FROM exports WHERE id = ?", (export_id,))
        return self.record_of(row) if row else None

    def insert_record(self, record: ExportRecord) -> None:
        self.run(
            f"INSERT INTO exports ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.record_values(record),
        )

    def newest_first(
        self, owner: str | None, limit: int, before: PageCursor | None
    ) -> list[ExportRecord]:
        where = f"({self.text_mark} IS NULL OR owner = ?)"
        return self._window(where, [owner, owner], before, "DESC", limit)

    def by_phase(self, phases: Collection[str]) -> list[ExportRecord]:
        where, params = self.phase_in(phases)
        return self._window(where, params, None, "ASC", None)

    def finished(
        self, created_before: datetime, limit: int, after: PageCursor | None
    ) -> list[ExportRecord]:
        where, params = self.phase_in(TERMINAL)
        params.append(self.stamp(created_before))
        return self._window(f"{where} AND created_at < ?", params, after, "ASC", limit)

    def _window(
        self,
        where: str,
        params: list[object],
        start: PageCursor | None,
        order: Literal["ASC", "DESC"],
        limit: int | None,
    ) -> list[ExportRecord]:
        """Records matching ``where`` in (created_at, id) ``order``, from after ``start``."""
        if start is not None:
            condition, more = self.keyset("<" if order == "DESC" else ">", start)
            where, params = f"{where} AND {condition}", [*params, *more]
        desc = " DESC" if order == "DESC" else ""
        sql = f"SELECT {COLUMNS} FROM exports WHERE {where} ORDER BY created_at{desc}, id{desc}"
        if limit is not None:
            sql, params = f"{sql} LIMIT ?", [*params, limit]
        return [self.record_of(row) for row in self.all(sql, params)]

    def set_status(self, change: StatusChange) -> ExportRecord | None:
        now, now_params = self.now()
        sql = (
            f"UPDATE exports SET phase = ?, status = ?, pid = ?, updated_at = {now}, "
            "version = version + 1 WHERE id = ?"
        )
        params = [
            change.status.phase.value,
            self.model_value(change.status),
            change.pid,
            *now_params,
            change.export_id,
        ]
        if change.expected_version is not None:
            sql += " AND version = ?"
            params.append(change.expected_version)
        if change.expected_phases is not None:
            condition, more = self.phase_in(change.expected_phases)
            sql += f" AND {condition}"
            params += more
        return self.updated(sql, params, change.export_id)

    def delete_finished(self, export_id: str, version: int) -> bool:
        condition, terminal = self.phase_in(TERMINAL)
        sql = f"DELETE FROM exports WHERE id = ? AND version = ? AND {condition}"
        return self.run(sql, [export_id, version, *terminal]).rowcount == 1

    def in_flight(self, owner: str) -> tuple[int, int]:
        condition, phases = self.phase_in(IN_FLIGHT)
        sql = f"SELECT {self.owned_count}, count(*) AS everyone FROM exports WHERE {condition}"
        row = self.one(sql, [owner, *phases])
        assert row is not None  # an aggregate always has a row
        return int(row["mine"]), int(row["everyone"])

    # -- idempotency keys -------------------------------------------------------------------

    def claim_key(self, entry: IdempotencyEntry) -> IdempotencyEntry | None:
        claimed = self.run(
            "INSERT INTO idempotency_keys (owner, key, request_hash, export_id, state, "
            "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (owner, key) DO NOTHING",
            (
                entry.owner,
                entry.key,
                entry.request_hash,
                entry.export_id,
                entry.state,
                self.stamp(entry.created_at),
                self.stamp(entry.expires_at),
            ),
        )
        if claimed.rowcount == 1:
            return None
        row = self.one(
            f"SELECT {_KEY_COLUMNS} FROM idempotency_keys WHERE owner = ? AND key = ?"
            + self.row_lock,
            (entry.owner, entry.key),
        )
        assert row is not None  # it conflicted, and keys are deleted only when expired
        return self.entry_of(row)

    def replace_key(self, entry: IdempotencyEntry) -> None:
        self.run(
            "UPDATE idempotency_keys SET request_hash = ?, export_id = ?, state = ?, "
            "response_status = NULL, response_body = NULL, response_headers = NULL, "
            "created_at = ?, expires_at = ? WHERE owner = ? AND key = ?",
            (
                entry.request_hash,
                entry.export_id,
                entry.state,
                self.stamp(entry.created_at),
                self.stamp(entry.expires_at),
                entry.owner,
                entry.key,
            ),
        )

    def complete_key(self, owner: str, key: str, response: StoredResponse) -> None:
        self.run(
            "UPDATE idempotency_keys SET state = 'done', response_status = ?, "
            "response_body = ?, response_headers = ? WHERE owner = ? AND key = ?",
            (response.status, response.body, self.json_value(response.headers), owner, key),
        )

    def release_key(self, owner: str, key: str) -> None:
        self.run(
            "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND state = 'pending'",
            (owner, key),
        )

    def purge_expired_keys(self, now: datetime) -> int:
        sql = "DELETE FROM idempotency_keys WHERE expires_at <= ?"
        return int(self.run(sql, (self.stamp(now),)).rowcount)

    # -- credits ----------------------------------------------------------------------------

    def select_account(self, owner: str, *, lock: bool = False) -> CreditAccount | None:
        sql = "SELECT owner, balance, accrued_at FROM credit_accounts WHERE owner = ?"
        row = self.one(sql + (self.row_lock if lock else ""), (owner,))
        return self.account_of(row) if row else None

    def lock_account(self, opening: CreditAccount) -> CreditAccount:
        now, now_params = self.now()
        self.run(
            "INSERT INTO credit_accounts (owner, balance, accrued_at, updated_at) "
            f"VALUES (?, ?, ?, {now}) ON CONFLICT (owner) DO NOTHING",
            (opening.owner, opening.balance, self.stamp(opening.accrued_at), *now_params),
        )
        account = self.select_account(opening.owner, lock=True)
        assert account is not None  # inserted above if it was missing
        return account

    def save_account(self, account: CreditAccount) -> None:
        now, now_params = self.now()
        self.run(
            f"UPDATE credit_accounts SET balance = ?, accrued_at = ?, updated_at = {now} "
            "WHERE owner = ?",
            (account.balance, self.stamp(account.accrued_at), *now_params, account.owner),
        )

    def add_ledger(
        self, export_id: str, kind: LedgerKind, owner: str, amount: int, at: datetime
    ) -> bool:
        cursor = self.run(
            "INSERT INTO credit_ledger (export_id, kind, owner, amount, at) VALUES "
            "(?, ?, ?, ?, ?) ON CONFLICT (export_id, kind) DO NOTHING",
            (export_id, kind, owner, amount, self.stamp(at)),
        )
        return cursor.rowcount == 1

    def ledger_debit(self, export_id: str) -> tuple[str, int] | None:
        row = self.one(
            "SELECT owner, amount FROM credit_ledger WHERE export_id = ? AND kind = 'debit'",
            (export_id,),
        )
        return (row["owner"], row["amount"]) if row else None

    # -- handle links (exportd.security.links)
    # -------------------------------------------------------

    def add_link_event(self, event: LinkEvent) -> None:
        self.run(
            f"INSERT INTO link_events ({_LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*event.model_dump(exclude={"at"}).values(), self.stamp(event.at)),
        )

    def link_events(self, export_id: str) -> list[LinkEvent]:
        rows = self.all(
            f"SELECT {_LINK_COLUMNS} FROM link_events WHERE export_id = ? ORDER BY at, id",
            (export_id,),
        )
        return [LinkEvent(**{**dict(row), "at": self.event_time(row["at"])}) for row in rows]

    def revoked_at(self, export_id: str) -> datetime | None:
        row = self.one(
            "SELECT MIN(at) AS at FROM link_events WHERE export_id = ? AND kind = 'revoke'",
            (export_id,),
        )
        return self.event_time(row["at"]) if row is not None and row["at"] else None

    # -- schema -----------------------------------------------------------------------------

    def answers(self) -> bool:
        row = self.one("SELECT 1 AS one")
        return row is not None and row["one"] == 1

    def schema_version(self) -> int:
        row = self.one("SELECT MAX(version) AS v FROM schema_migrations")
        return int(row["v"] or 0) if row else 0

    def migrate(self, migrations: Collection[Migration]) -> None:
        """Apply those of ``migrations`` not applied yet, recording each."""
        done = {row["version"] for row in self.all("SELECT version FROM schema_migrations")}
        for migration in migrations:
            if migration.version in done:
                continue
            for statement in migration.statements:
                self.run(statement)
            now, now_params = self.now()
            self.run(
                f"INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, {now})",
                (migration.version, migration.name, *now_params),
            )
