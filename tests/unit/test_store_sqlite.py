"""The SQLite state store: schema, records, pagination and compare-and-set updates."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from exportd.contract.errors import Conflict, InvalidInput
from exportd.contract.spec import ExportSpec, ExportStatus, Phase, new_export_id, utc_now
from exportd.store.base import ExportRecord
from exportd.store.migrations import MIGRATIONS
from exportd.store.pg_migrations import PG_MIGRATIONS
from exportd.store.sqlite import SqliteStateStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "state.sqlite3")
    await opened.open()
    yield opened
    await opened.close()


def record(owner: str = "alice", *, age_seconds: int = 0) -> ExportRecord:
    now = utc_now() - timedelta(seconds=age_seconds)
    spec = ExportSpec(
        id=new_export_id(),
        type="userExport",
        format="xlsx",
        file_name="a.xlsx",
        variables={"x": 1, "y": 2},
        requested_by=owner,
        requested_at=now,
    )
    return ExportRecord(spec=spec, owner=owner, created_at=now, updated_at=now)


async def test_a_created_record_reads_back_equal(store: SqliteStateStore) -> None:
    """create then get returns the same spec, status, owner and timestamps."""
    created = await store.create(record())
    assert await store.get(created.id) == created
    assert await store.get("exp-missing") is None


async def test_creating_an_existing_id_is_a_conflict(store: SqliteStateStore) -> None:
    """The id is the idempotency key of a record: a second insert raises Conflict."""
    first = await store.create(record())
    with pytest.raises(Conflict):
        await store.create(first)


async def test_schema_is_versioned_and_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    """The migrations table records each version once; WAL mode is on; data survives reopen."""
    path = tmp_path / "s.sqlite3"
    for _ in range(2):
        opened = SqliteStateStore(path)
        await opened.open()
        assert await opened.schema_version() == MIGRATIONS[-1].version
        await opened.create(record())
        await opened.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(
            MIGRATIONS
        )
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM exports").fetchone()[0] == 2


def test_both_databases_number_and_name_their_migrations_alike() -> None:
    assert [(m.version, m.name) for m in MIGRATIONS] == [(m.version, m.name) for m in PG_MIGRATIONS]
    assert all("{" not in s for m in MIGRATIONS + PG_MIGRATIONS for s in m.statements)


async def test_owner_listing_is_newest_first_paginated_and_private(
    store: SqliteStateStore,
) -> None:
    """Five of alice's records and one of bob's: pages of 2 walk alice's newest first, end with
    no cursor, and never include bob's."""
    alice = [await store.create(record("alice", age_seconds=age)) for age in (50, 40, 30, 20, 10)]
    await store.create(record("bob"))
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page = await store.list_for_owner("alice", 2, cursor)
        seen += [r.id for r in page.items]
        cursor = page.next_cursor
    assert cursor is None
    assert seen == [r.id for r in reversed(alice)]


async def test_a_forged_cursor_is_invalid_input_naming_cursor(store: SqliteStateStore) -> None:
    with pytest.raises(InvalidInput) as caught:
        await store.list_for_owner("alice", 2, "not-a-cursor")
    assert caught.value.errors[0].field == "cursor"


async def test_update_is_compare_and_set_on_version_and_phase(store: SqliteStateStore) -> None:
    """A write with a stale version or an unexpected phase changes nothing and returns None."""
    created = await store.create(record())
    running = ExportStatus(phase=Phase.RUNNING, attempts=1)
    updated = await store.update_status(
        created.id, running, pid=1234, expected_version=created.version
    )
    assert updated is not None
    assert (updated.phase, updated.pid, updated.version) == (Phase.RUNNING, 1234, 2)
    stale = await store.update_status(
        created.id, ExportStatus(phase=Phase.FAILED), expected_version=created.version
    )
    assert stale is None
    wrong_phase = await store.update_status(
        created.id, ExportStatus(phase=Phase.CANCELLED), expected_phases=[Phase.QUEUED]
    )
    assert wrong_phase is None
    current = await store.get(created.id)
    assert current is not None and current.phase is Phase.RUNNING


async def test_list_by_phase_is_oldest_first(store: SqliteStateStore) -> None:
    """Recovery order: records in the given phases, in the order they were accepted."""
    old = await store.create(record(age_seconds=30))
    new = await store.create(record(age_seconds=10))
    done = await store.create(record(age_seconds=20))
    await store.update_status(done.id, ExportStatus(phase=Phase.SUCCEEDED))
    await store.update_status(new.id, ExportStatus(phase=Phase.QUEUED, queue_position=1))
    found = await store.list_by_phase([Phase.PENDING, Phase.QUEUED])
    assert [r.id for r in found] == [old.id, new.id]


async def test_ping_answers_when_open_and_not_when_closed(tmp_path: Path) -> None:
    opened = SqliteStateStore(tmp_path / "p.sqlite3")
    await opened.open()
    assert await opened.ping() is True
    await opened.close()
    assert await opened.ping() is False
