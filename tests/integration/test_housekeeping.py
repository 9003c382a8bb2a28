"""Housekeeping deletes exactly what expired, fails exactly the stuck exports, and two runs at
once (two connections, two processes) neither fail nor count anything twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from exportd.contract.spec import ExportFormat, ExportSpec, ExportStatus, Phase, utc_now
from exportd.ops.housekeeping import Housekeeper, HousekeepingReport
from exportd.security.signing import UrlSigner
from exportd.settings import ApiSettings
from exportd.storage.local import LocalStorage
from exportd.store.base import ExportRecord, StateStore, store_from_settings
from exportd.store.sqlite import SqliteStateStore
from tests.integration.conftest import make_settings
from tests.integration.pgstate import throwaway_schema

pytestmark = pytest.mark.anyio
DAY = timedelta(days=1)
EXPORTD = Path(sys.executable).parent / "exportd"


@dataclass
class World:
    settings: ApiSettings
    store: StateStore
    storage: LocalStorage

    def file_of(self, export_id: str) -> Path:
        return self.storage.path_of(f"exports/{export_id}/out.csv")

    def marker_of(self, export_id: str) -> Path:
        return self.storage.path_of(f"exports/{export_id}/.delivered-email")

    def stored(self) -> set[str]:
        root = self.storage.root
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    async def add(
        self,
        export_id: str,
        phase: Phase,
        *,
        finished_ago: timedelta | None = None,
        quiet_for: timedelta = timedelta(0),
        with_file: bool = False,
        with_marker: bool = False,
    ) -> ExportRecord:
        now = utc_now()
        created = now - (finished_ago or quiet_for) - timedelta(minutes=5)
        spec = ExportSpec(
            id=export_id,
            type="userExport",
            format=ExportFormat.CSV,
            file_name="out.csv",
            requested_by="alice",
            requested_at=created,
        )
        status = ExportStatus(phase=phase, attempts=1, started_at=created)
        if finished_ago is not None:
            status = status.evolve(completed_at=now - finished_ago)
        if with_file:
            self.file_of(export_id).parent.mkdir(parents=True, exist_ok=True)
            self.file_of(export_id).write_text("id\n1\n")
            status = status.evolve(object_key=spec.object_key, rows=1, bytes=5)
        if with_marker:
            self.marker_of(export_id).parent.mkdir(parents=True, exist_ok=True)
            self.marker_of(export_id).write_text("{}")
        record = ExportRecord(
            spec=spec,
            status=status,
            owner="alice",
            created_at=created,
            updated_at=now - quiet_for if finished_ago is None else now - finished_ago,
        )
        return await self.store.create(record)


@pytest.fixture
def state_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None``: SQLite under the data directory; ``postgres``: a fresh schema of its own."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    with throwaway_schema() as url:
        yield url


@pytest.fixture
async def world(tmp_path: Path, sample_db: Path, state_url: str | None) -> AsyncIterator[World]:
    settings = make_settings(tmp_path / "data", sample_db, state_db_url=state_url)
    store = store_from_settings(settings)
    await store.open()
    storage = LocalStorage(tmp_path / "data" / "files", UrlSigner("k" * 32, "http://x"))
    yield World(settings, store, storage)
    await store.close()


STORES = pytest.mark.parametrize("state_url", ["sqlite", "postgres"], indirect=True)


async def add_mixture(world: World) -> None:
    """One of each case; the comments say what housekeeping must do."""
    retention = timedelta(seconds=world.settings.record_retention_seconds)
    files = timedelta(seconds=world.settings.file_retention_seconds)
    stuck = timedelta(seconds=world.settings.stuck_after_seconds)
    add = world.add
    # record, file and marker deleted
    await add(
        "exp-old-ok",
        Phase.SUCCEEDED,
        finished_ago=retention + DAY,
        with_file=True,
        with_marker=True,
    )
    await add("exp-old-failed", Phase.FAILED, finished_ago=retention + DAY)  # record deleted
    # file deleted, record kept without object key
    await add("exp-file-expired", Phase.SUCCEEDED, finished_ago=files + DAY, with_file=True)
    await add("exp-file-gone", Phase.SUCCEEDED, finished_ago=files + DAY)  # nothing left to do
    await add("exp-fresh", Phase.SUCCEEDED, finished_ago=files - DAY, with_file=True)  # kept
    await add("exp-almost-old", Phase.CANCELLED, finished_ago=retention - DAY)  # kept
    await add("exp-stuck", Phase.RUNNING, quiet_for=stuck * 2)  # failed as Stuck
    await add("exp-live", Phase.RUNNING, quiet_for=stuck * 2)  # its process lives: kept
    await add("exp-busy", Phase.RUNNING, quiet_for=stuck / 2)  # changed recently: kept
    await add("exp-waiting", Phase.QUEUED, quiet_for=stuck * 2)  # not Running: kept


def live_only(record: ExportRecord) -> bool:
    return record.id == "exp-live"


@STORES
async def test_housekeeping_deletes_exactly_what_expired(world: World) -> None:
    await add_mixture(world)
    report = await Housekeeper(world.settings, world.store, world.storage, is_live=live_only).run()
    assert report == HousekeepingReport(files_deleted=1, records_deleted=2, stuck_failed=1)

    left = {r.id: r for r in await world.store.list_by_phase(list(Phase))}
    assert set(left) == {
        "exp-file-expired", "exp-file-gone", "exp-fresh", "exp-almost-old",
        "exp-stuck", "exp-live", "exp-busy", "exp-waiting",
    }  # fmt: skip
    assert world.stored() == {"exports/exp-fresh/out.csv"}
    expired = left["exp-file-expired"].status
    assert expired.phase is Phase.SUCCEEDED and expired.object_key is None and expired.rows == 1
    assert left["exp-fresh"].status.object_key == "exports/exp-fresh/out.csv"
    stuck = left["exp-stuck"].status
    assert stuck.phase is Phase.FAILED and stuck.error is not None
    assert stuck.error.reason == "Stuck" and stuck.completed_at is not None
    for untouched in ("exp-live", "exp-busy"):
        assert left[untouched].phase is Phase.RUNNING
    assert left["exp-waiting"].phase is Phase.QUEUED

    again = await Housekeeper(world.settings, world.store, world.storage, is_live=live_only).run()
    assert again == HousekeepingReport(), "a second run finds nothing left to do"


@STORES
async def test_two_runs_at_once_do_not_fail_and_count_each_item_once(world: World) -> None:
    """Two housekeepers on two connections of one database, started together, over many
    expired items: both finish, and their reports add up to exactly the expected totals."""
    retention = timedelta(seconds=world.settings.record_retention_seconds)
    files = timedelta(seconds=world.settings.file_retention_seconds)
    stuck = timedelta(seconds=world.settings.stuck_after_seconds)
    for i in range(40):
        await world.add(
            f"exp-old-{i:03d}", Phase.SUCCEEDED, finished_ago=retention + DAY, with_file=True
        )
        await world.add(
            f"exp-expiring-{i:03d}", Phase.SUCCEEDED, finished_ago=files + DAY, with_file=True
        )
    for i in range(10):
        await world.add(f"exp-stuck-{i:03d}", Phase.RUNNING, quiet_for=stuck * 2)
    second_store = store_from_settings(world.settings)
    await second_store.open()
    try:
        one = Housekeeper(world.settings, world.store, world.storage, is_live=lambda _: False)
        two = Housekeeper(world.settings, second_store, world.storage, is_live=lambda _: False)
        reports = await asyncio.gather(one.run(), two.run())
    finally:
        await second_store.close()
    assert sum(r.records_deleted for r in reports) == 40
    assert sum(r.files_deleted for r in reports) == 40
    assert sum(r.stuck_failed for r in reports) == 10
    assert all(r.errors == 0 for r in reports)
    assert world.stored() == set()
    left = await world.store.list_by_phase(list(Phase))
    assert len(left) == 50
    assert {r.phase for r in left} == {Phase.SUCCEEDED, Phase.FAILED}


def run_cli(settings: ApiSettings) -> subprocess.Popen[str]:
    env = {
        "PATH": os.defpath,
        "HOME": str(settings.data_dir),
        "EXPORTD_DATA_DIR": str(settings.data_dir),
        "EXPORTD_STORAGE__ROOT": str(settings.data_dir / "files"),
        "EXPORTD_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [str(EXPORTD), "housekeeping"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_two_housekeeping_processes_at_once_both_succeed(world: World) -> None:
    """``exportd housekeeping`` twice in parallel (a cron run beside the server's timer)."""
    retention = timedelta(seconds=world.settings.record_retention_seconds)
    for i in range(30):
        await world.add(
            f"exp-old-{i:03d}", Phase.FAILED, finished_ago=retention + DAY, with_marker=True
        )
    await world.add("exp-keep", Phase.SUCCEEDED, finished_ago=DAY, with_file=True)
    processes = [run_cli(world.settings), run_cli(world.settings)]
    outputs = [await asyncio.to_thread(p.communicate, timeout=120) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    reports: list[dict[str, Any]] = [json.loads(out) for out, _ in outputs]
    assert sum(r["records_deleted"] for r in reports) == 30
    assert [r.id for r in await world.store.list_by_phase(list(Phase))] == ["exp-keep"]
    assert world.stored() == {"exports/exp-keep/out.csv"}


async def test_the_embedded_server_runs_housekeeping_in_the_background(
    tmp_path: Path, sample_db: Path
) -> None:
    """An expired record present at start is gone shortly after the app starts, without any
    request; its file too."""
    from tests.integration.test_ops_probes import started

    settings = make_settings(tmp_path / "data", sample_db)
    store = SqliteStateStore(settings.state_db_path)
    await store.open()
    storage = LocalStorage(settings.data_dir / "files", UrlSigner("k" * 32, "http://x"))
    world = World(settings, store, storage)
    retention = timedelta(seconds=settings.record_retention_seconds)
    await world.add("exp-expired", Phase.SUCCEEDED, finished_ago=retention + DAY, with_file=True)
    await world.add("exp-current", Phase.SUCCEEDED, finished_ago=DAY, with_file=True)
    await store.close()
    async with started(settings):
        give_up = time.monotonic() + 60
        while (await _ids(settings)) != {"exp-current"}:
            assert time.monotonic() < give_up, "housekeeping did not run"
            await asyncio.sleep(0.1)
    assert world.stored() == {"exports/exp-current/out.csv"}


async def _ids(settings: ApiSettings) -> set[str]:
    store = SqliteStateStore(settings.state_db_path)
    await store.open()
    try:
        return {r.id for r in await store.list_by_phase(list(Phase))}
    finally:
        await store.close()


async def test_housekeeping_removes_old_leftovers_and_spares_a_kept_result(world: World) -> None:
    """Left by killed processes an hour or more ago: a work directory in DATA_DIR/tmp, a staged
    ``.part`` file in an export folder (then empty). Beside them: a running export's work
    directory, a fresh one, and a Running record, quiet past ``stuck_after_seconds``, whose
    finished result waits in the outbox for the state store. Must hold: exactly the three old
    leftovers go; the result's record is not failed as Stuck."""
    from exportd.store.outbox import ResultOutbox
    from tests.specs import small_result

    stuck = timedelta(seconds=world.settings.stuck_after_seconds)
    await world.add("exp-finished", Phase.RUNNING, quiet_for=stuck * 2)
    await world.add("exp-running", Phase.RUNNING, quiet_for=stuck / 2)
    kept = small_result("exports/exp-finished/out.csv")
    ResultOutbox.of_data_dir(world.settings.data_dir).put("exp-finished", kept)
    temp = world.settings.data_dir / "tmp"
    old_work, running_work, fresh_work = (
        temp / "exp-gone.a1",
        temp / "exp-running.b2",
        temp / "exp-new.c3",
    )
    staged = world.storage.path_of("exports/exp-crashed/out.csv").with_name(".out.csv.9f.part")
    for directory in (old_work, running_work, fresh_work, staged.parent):
        directory.mkdir(parents=True)
    (old_work / "partial.csv").write_text("id\n")
    staged.write_text("id\n")
    two_hours_ago = time.time() - 7200
    for path in (old_work / "partial.csv", old_work, running_work, staged, staged.parent):
        os.utime(path, (two_hours_ago, two_hours_ago))

    report = await Housekeeper(world.settings, world.store, world.storage).run()

    assert report.leftovers_removed == 3 and report.stuck_failed == 0, report
    assert not old_work.exists() and not staged.parent.exists()
    assert running_work.exists() and fresh_work.exists()
    finished = await world.store.get("exp-finished")
    assert finished is not None and finished.phase is Phase.RUNNING
