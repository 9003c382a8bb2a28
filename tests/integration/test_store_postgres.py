"""The state store contract, run against SQLite and the real PostgreSQL alike: records,
migrations, and the admission rules (credits, queue limits, idempotency keys, refunds) that must
hold in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from exportd.contract.errors import Conflict, InvalidInput
from exportd.contract.spec import ExportSpec, ExportStatus, Phase
from exportd.security.credits import CreditPolicy, InsufficientCredits
from exportd.settings import ApiSettings
from exportd.store.admission import Admission, QueueFull, QueueLimits, StoredResponse
from exportd.store.base import ExportRecord, StateStore, store_from_settings
from exportd.store.pg_migrations import PG_MIGRATIONS
from exportd.store.postgres import PostgresStateStore
from exportd.store.sqlite import SqliteStateStore
from tests.integration.pgstate import throwaway_schema

pytestmark = pytest.mark.anyio
POLICY = CreditPolicy()
NOON = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    clock = Clock(NOON)
    if request.param == "sqlite":
        opened: StateStore = SqliteStateStore(tmp_path / "state.sqlite3", clock=clock)
        await opened.open()
        yield opened
        await opened.close()
        return
    with throwaway_schema() as dsn:
        opened = PostgresStateStore(dsn, clock=clock)
        await opened.open()
        yield opened
        await opened.close()


def spec_of(owner: str, number: int, make_export_spec: Callable[..., ExportSpec]) -> ExportSpec:
    return make_export_spec(id=f"exp-{owner}-{number}", requested_by=owner)


def charged(spec: ExportSpec, now: datetime = NOON, **extra: Any) -> Admission:
    return Admission(
        owner=spec.requested_by,
        export_id=spec.id,
        now=now,
        record=ExportRecord.new(spec),
        credits=POLICY,
        **extra,
    )


async def test_records_round_trip_and_paginate(store: StateStore, make_export_spec: Any) -> None:
    """create/get/update (compare-and-set)/list newest first with a cursor."""
    specs = [spec_of("alice", i, make_export_spec) for i in range(3)]
    for spec in specs:
        await store.create(ExportRecord.new(spec))
    with pytest.raises(Conflict):
        await store.create(ExportRecord.new(specs[0]))
    got = await store.get(specs[0].id)
    assert got is not None and got.spec == specs[0] and got.phase is Phase.PENDING
    running = ExportStatus(phase=Phase.RUNNING, attempts=1)
    updated = await store.update_status(specs[0].id, running, pid=42, expected_version=1)
    assert updated is not None and updated.version == 2 and updated.pid == 42
    assert await store.update_status(specs[0].id, running, expected_version=1) is None
    assert await store.update_status(specs[0].id, running, expected_phases=[Phase.QUEUED]) is None
    first = await store.list_for_owner("alice", limit=2)
    assert [r.id for r in first.items] == [s.id for s in specs[::-1][:2]]
    assert first.next_cursor is not None
    rest = await store.list_for_owner("alice", limit=2, cursor=first.next_cursor)
    assert [r.id for r in rest.items] == [specs[0].id] and rest.next_cursor is None
    waiting = await store.list_by_phase([Phase.PENDING])
    assert [r.id for r in waiting] == [s.id for s in specs[1:]]


async def test_each_admission_debits_one_credit_and_the_sixth_is_refused(
    store: StateStore, make_export_spec: Any
) -> None:
    """Five admissions spend the five opening credits; the sixth raises 402 naming the next
    midnight and leaves no record and no debit behind."""
    for number in range(5):
        admitted = await store.admit(charged(spec_of("alice", number, make_export_spec)))
        assert admitted.balance == 4 - number
    sixth = spec_of("alice", 5, make_export_spec)
    with pytest.raises(InsufficientCredits) as refused:
        await store.admit(charged(sixth))
    assert refused.value.next_credit_at == datetime(2025, 6, 2, tzinfo=UTC)
    assert await store.get(sixth.id) is None
    assert not await store.refund(sixth.id)  # nothing was charged for it
    account = await store.credit_account("alice", POLICY, NOON)
    assert account.balance == 0


async def test_a_credit_accrues_across_midnight_by_the_test_clock(
    store: StateStore, make_export_spec: Any
) -> None:
    """Spent out at noon; at 23:59 still 0; at 00:00 the next day one admission succeeds."""
    for number in range(5):
        await store.admit(charged(spec_of("alice", number, make_export_spec)))
    before = NOON.replace(hour=23, minute=59)
    assert (await store.credit_account("alice", POLICY, before)).balance == 0
    with pytest.raises(InsufficientCredits):
        await store.admit(charged(spec_of("alice", 5, make_export_spec), before))
    midnight = datetime(2025, 6, 2, tzinfo=UTC)
    assert (await store.credit_account("alice", POLICY, midnight)).balance == 1
    admitted = await store.admit(charged(spec_of("alice", 6, make_export_spec), midnight))
    assert admitted.balance == 0


async def test_failed_and_cancelled_records_refund_once_succeeded_does_not(
    store: StateStore, make_export_spec: Any
) -> None:
    specs = [spec_of("alice", i, make_export_spec) for i in range(3)]
    for spec in specs:
        await store.admit(charged(spec))
    assert (await store.credit_account("alice", POLICY, NOON)).balance == 2
    for spec, phase in zip(specs, (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED), strict=True):
        await store.update_status(spec.id, ExportStatus(phase=phase))
    assert (await store.credit_account("alice", POLICY, NOON)).balance == 4
    await store.update_status(specs[1].id, ExportStatus(phase=Phase.FAILED))  # reported again
    assert not await store.refund(specs[2].id)
    assert (await store.credit_account("alice", POLICY, NOON)).balance == 4


async def test_queue_limits_refuse_with_nothing_charged(
    store: StateStore, make_export_spec: Any
) -> None:
    """Per-user limit 2: the third in-flight export of alice is refused (QueueFull) before any
    debit; bob still gets in until the global limit 3 is reached."""
    limits = QueueLimits(per_user=2, total=3)
    for number in range(2):
        await store.admit(charged(spec_of("alice", number, make_export_spec), queue=limits))
    with pytest.raises(QueueFull):
        await store.admit(charged(spec_of("alice", 2, make_export_spec), queue=limits))
    assert (await store.credit_account("alice", POLICY, NOON)).balance == 3
    await store.admit(charged(spec_of("bob", 0, make_export_spec), queue=limits))
    with pytest.raises(QueueFull):
        await store.admit(charged(spec_of("carol", 0, make_export_spec), queue=limits))
    assert (await store.credit_account("carol", POLICY, NOON)).balance == 5
    await store.update_status("exp-alice-0", ExportStatus(phase=Phase.SUCCEEDED))
    await store.admit(charged(spec_of("carol", 1, make_export_spec), queue=limits))


async def test_idempotency_key_claim_replay_mismatch_and_expiry(
    store: StateStore, make_export_spec: Any
) -> None:
    """Claimed key + same hash while pending -> 409; other hash -> 422; after completion the
    stored response comes back with no second debit; an expired key can be claimed again."""
    spec = spec_of("alice", 0, make_export_spec)
    key = {"key": "k-1", "request_hash": "h1", "key_expires_at": NOON + timedelta(days=1)}
    await store.admit(charged(spec, **key))
    with pytest.raises(Conflict):
        await store.admit(charged(spec, **key))
    with pytest.raises(InvalidInput) as mismatch:
        await store.admit(charged(spec, **{**key, "request_hash": "h2"}))
    assert mismatch.value.errors[0].field == "Idempotency-Key"
    response = StoredResponse(202, '{"id": "x"}', {"Location": "/v1/exports/x"})
    await store.complete_key("alice", "k-1", response)
    replay = await store.admit(charged(spec, **key))
    assert replay.replay == response and replay.export_id == spec.id
    assert (await store.credit_account("alice", POLICY, NOON)).balance == 4
    bob = await store.admit(charged(spec_of("bob", 0, make_export_spec), **key))
    assert bob.replay is None  # keys are per user
    assert await store.purge_expired_keys(NOON + timedelta(days=2)) == 2
    again = spec_of("alice", 1, make_export_spec)
    assert (await store.admit(charged(again, **key))).replay is None


async def test_a_released_key_can_be_used_again(store: StateStore, make_export_spec: Any) -> None:
    spec = spec_of("alice", 0, make_export_spec)
    key = {"key": "k-2", "request_hash": "h", "key_expires_at": NOON + timedelta(days=1)}
    claim = Admission(
        "alice", spec.id, NOON, key="k-2", request_hash="h", key_expires_at=key["key_expires_at"]
    )
    await store.admit(claim)
    await store.release_key("alice", "k-2")
    assert (await store.admit(charged(spec, **key))).replay is None


async def test_an_expired_key_still_stored_is_claimed_afresh(
    store: StateStore, make_export_spec: Any
) -> None:
    """A key past its expiry but not purged yet names a new request: no 422, no replay."""
    expiry = NOON + timedelta(hours=1)
    first = {"key": "k-3", "request_hash": "h1", "key_expires_at": expiry}
    await store.admit(charged(spec_of("alice", 0, make_export_spec), **first))
    later = NOON + timedelta(hours=2)
    second = {"key": "k-3", "request_hash": "h2", "key_expires_at": later + timedelta(hours=1)}
    admitted = await store.admit(charged(spec_of("alice", 1, make_export_spec), later, **second))
    assert admitted.replay is None and admitted.export_id == "exp-alice-1"
    with pytest.raises(Conflict):  # the fresh claim is pending again
        await store.admit(charged(spec_of("alice", 1, make_export_spec), later, **second))


async def test_a_batch_update_refunds_a_failure_and_no_owner_lists_everyone(
    store: StateStore, make_export_spec: Any
) -> None:
    """update_many lands every update in one go, giving back the credit of the one that
    Failed; a listing for no owner holds every user's records."""
    alice, bob = spec_of("alice", 0, make_export_spec), spec_of("bob", 0, make_export_spec)
    for spec in (alice, bob):
        await store.admit(charged(spec))
    running = ExportStatus(phase=Phase.RUNNING, attempts=1)
    failed = ExportStatus(phase=Phase.FAILED)
    updated = await store.update_many([(alice.id, running, 7), (bob.id, failed, None)])
    assert [(r.phase, r.pid, r.version) for r in updated if r is not None] == [
        (Phase.RUNNING, 7, 2),
        (Phase.FAILED, None, 2),
    ]
    assert (await store.credit_account("alice", POLICY, NOON)).balance == 4
    assert (await store.credit_account("bob", POLICY, NOON)).balance == 5
    everyone = await store.list_for_owner(None)
    assert [r.id for r in everyone.items] == [bob.id, alice.id]


async def test_twenty_concurrent_admissions_with_one_credit_admit_exactly_one(
    store: StateStore, make_export_spec: Any
) -> None:
    """Alice has 1 credit; 20 admissions race (PostgreSQL: on several pooled connections):
    exactly one record and one debit exist afterwards, 19 are refused with 402."""
    for number in range(4):
        await store.admit(charged(spec_of("alice", number, make_export_spec)))
    racers = [spec_of("alice", 100 + i, make_export_spec) for i in range(20)]
    results = await asyncio.gather(
        *(store.admit(charged(spec)) for spec in racers), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    assert len(admitted) == 1 and len(refused) == 19, results
    records = [await store.get(spec.id) for spec in racers]
    assert sum(record is not None for record in records) == 1
    assert (await store.credit_account("alice", POLICY, NOON)).balance == 0


async def test_postgres_migrations_run_once_when_replicas_start_together() -> None:
    """Three stores opening one empty schema at the same time: all open, at the latest
    schema version, each migration recorded once."""
    with throwaway_schema() as dsn:
        stores = [PostgresStateStore(dsn) for _ in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            assert {await s.schema_version() for s in stores} == {PG_MIGRATIONS[-1].version}
            with psycopg.connect(dsn) as conn:
                rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
            assert sorted(r[0] for r in rows) == [m.version for m in PG_MIGRATIONS]
        finally:
            for opened in stores:
                await opened.close()


async def test_settings_dsn_selects_the_postgres_store(tmp_path: Path) -> None:
    with throwaway_schema() as dsn:
        chosen = store_from_settings(ApiSettings(data_dir=tmp_path, state_db_url=dsn))
        assert isinstance(chosen, PostgresStateStore)
        await chosen.open()
        try:
            assert await chosen.ping()
        finally:
            await chosen.close()
        assert not await chosen.ping()
