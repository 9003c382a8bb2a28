"""``exportd backup`` then ``exportd restore`` into an empty database gives back the same
records (SQLite to SQLite, SQLite to PostgreSQL, through the command line too); in Kubernetes
mode the ExportRequests come back with their spec and status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.aio.client import Configuration

from exportd.contract import exportrequest as er
from exportd.contract.spec import (
    ExportErrorInfo,
    ExportFormat,
    ExportSpec,
    ExportStatus,
    Phase,
    ReturnType,
)
from exportd.ops import backup as backups
from exportd.settings import ApiSettings, Backend
from exportd.store.base import ExportRecord, StateStore, store_from_settings
from tests.integration.conftest import make_settings
from tests.integration.pgstate import throwaway_schema
from tests.k8s.cluster import REQUESTS_URL, LocalCluster
from tests.k8s.fixtures import cluster_fixture  # noqa: F401

pytestmark = pytest.mark.anyio
EXPORTD = Path(sys.executable).parent / "exportd"
T0 = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def sample_records() -> list[ExportRecord]:
    """One record per phase, with everything a record can carry."""
    records = []
    for i, phase in enumerate(Phase):
        spec = ExportSpec(
            id=f"exp-backup-{i:02d}",
            type="userExport",
            format=ExportFormat.XLSX if i % 2 else ExportFormat.CSV,
            return_type=ReturnType.EMAIL if i == 3 else ReturnType.URL,
            email="bob@example.com" if i == 3 else None,
            file_name=f"Bericht für März {i}.{'xlsx' if i % 2 else 'csv'}",
            variables={"x": 1, "y": 2.5, "name": "Ünïcode ✓", "flag": True, "none": None},
            requested_by="alice@example.com" if i % 2 else "bob",
            requested_at=T0 + timedelta(minutes=i),
        )
        status = ExportStatus(
            phase=phase,
            rows=1000 * i if phase is not Phase.PENDING else None,
            bytes=4096 * i or None,
            object_key=spec.object_key if phase is Phase.SUCCEEDED else None,
            queue_position=2 if phase is Phase.QUEUED else None,
            attempts=i % 3,
            started_at=T0 + timedelta(minutes=i, seconds=1),
            completed_at=T0 + timedelta(minutes=i, seconds=9) if phase.is_terminal else None,
            error=ExportErrorInfo(reason="QueryFailed", message="no such table")
            if phase is Phase.FAILED
            else None,
        )
        records.append(
            ExportRecord(
                spec=spec,
                status=status,
                owner=spec.requested_by,
                created_at=T0 + timedelta(minutes=i),
                updated_at=T0 + timedelta(minutes=i, seconds=10),
                version=3 + i,
                pid=4242 if phase is Phase.RUNNING else None,
            )
        )
    return records


async def all_records(store: StateStore) -> list[ExportRecord]:
    return sorted(await store.list_by_phase(list(Phase)), key=lambda r: r.id)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway_schema() as url:
        yield url


@pytest.fixture
async def source(tmp_path: Path, sample_db: Path) -> AsyncIterator[ApiSettings]:
    """A SQLite state database holding the sample records."""
    settings = make_settings(tmp_path / "source", sample_db)
    store = store_from_settings(settings)
    await store.open()
    for record in sample_records():
        await store.create(record)
    await store.close()
    yield settings


async def read_back(settings: ApiSettings) -> list[ExportRecord]:
    store = store_from_settings(settings)
    await store.open()
    try:
        return await all_records(store)
    finally:
        await store.close()


@pytest.mark.parametrize("target_kind", ["sqlite", "postgres"])
async def test_backup_then_restore_into_an_empty_database_gives_the_same_records(
    source: ApiSettings, tmp_path: Path, sample_db: Path, target_kind: str, request: Any
) -> None:
    summary = await backups.backup(source, tmp_path / "backups")
    assert summary.records == len(Phase)
    assert summary.path.name.startswith("exportd-backup-")
    assert sorted(p.name for p in summary.path.iterdir()) == ["exports.jsonl", "manifest.json"]
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [summary.path.name]

    url = request.getfixturevalue("pg_url") if target_kind == "postgres" else None
    target = make_settings(tmp_path / "target", sample_db, state_db_url=url)
    assert await read_back(target) == []
    restored = await backups.restore(target, summary.path)
    assert (restored.records_restored, restored.records_skipped) == (len(Phase), 0)
    assert await read_back(target) == await read_back(source) == sample_records()

    again = await backups.restore(target, summary.path)
    assert (again.records_restored, again.records_skipped) == (0, len(Phase))
    assert await read_back(target) == sample_records()


async def test_restore_never_overwrites_a_record_that_moved_on(
    source: ApiSettings, tmp_path: Path, sample_db: Path
) -> None:
    summary = await backups.backup(source, tmp_path / "backups")
    target = make_settings(tmp_path / "target", sample_db)
    newer = sample_records()[0].model_copy(update={"version": 99})
    store = store_from_settings(target)
    await store.open()
    await store.create(newer)
    await store.close()
    restored = await backups.restore(target, summary.path)
    assert (restored.records_restored, restored.records_skipped) == (len(Phase) - 1, 1)
    assert (await read_back(target))[0].version == 99


async def test_a_damaged_backup_is_refused(tmp_path: Path, sample_db: Path) -> None:
    target = make_settings(tmp_path / "target", sample_db)
    (tmp_path / "not-a-backup").mkdir()
    with pytest.raises(backups.InvalidInput):
        await backups.restore(target, tmp_path / "not-a-backup")


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.defpath, "HOME": str(data_dir), "EXPORTD_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [str(EXPORTD), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def test_the_command_line_backs_up_and_restores(
    source: ApiSettings, tmp_path: Path, sample_db: Path
) -> None:
    made = cli(source.data_dir, "backup", "--to", str(tmp_path / "saved"))
    assert made.returncode == 0, made.stderr
    backup_dir = Path(made.stdout.strip())
    assert backup_dir.parent == tmp_path / "saved" and backup_dir.is_dir()
    target_dir = tmp_path / "target"
    restored = cli(target_dir, "restore", str(backup_dir))
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["records_restored"] == len(Phase)
    target = make_settings(target_dir, sample_db)
    assert await read_back(target) == sample_records()


# -- Kubernetes mode --------------------------------------------------------------------------


async def test_export_requests_are_backed_up_as_yaml_and_restored_with_their_status(
    cluster: LocalCluster, tmp_path: Path, sample_db: Path
) -> None:
    settings = make_settings(tmp_path / "api", sample_db, backend=Backend.KUBERNETES)
    config = Configuration(host=cluster.url)
    specs = {
        "exp-kube-done": {"type": "userExport", "fileName": "a.xlsx", "variables": {"x": 1}},
        "exp-kube-failed": {"type": "brokenQuery", "fileName": "b.csv", "variables": {"one": 1}},
    }
    statuses = {
        "exp-kube-done": {"phase": "Succeeded", "rows": 10, "objectKey": "exports/x/a.xlsx"},
        "exp-kube-failed": {"phase": "Failed", "reason": "QueryFailed", "message": "no table"},
    }
    for name, spec in specs.items():
        await cluster.create_request(name, spec)
        headers = {"Content-Type": "application/merge-patch+json"}
        async with cluster.session.patch(
            f"{REQUESTS_URL}/{name}/status", json={"status": statuses[name]}, headers=headers
        ) as response:
            assert response.status == 200, await response.text()
    before = {name: cluster.request(name) for name in specs}

    summary = await backups.backup(settings, tmp_path / "backups", configuration=config)
    assert summary.export_requests == 2
    documents = list(backups.yaml.safe_load_all((summary.path / "exportrequests.yaml").open()))
    assert {d["metadata"]["name"] for d in documents} == set(specs)
    assert all("uid" not in d["metadata"] and d["kind"] == er.KIND for d in documents)

    for name in specs:
        await cluster.delete_request(name)
    await cluster.until(lambda: all(cluster.request(n) is None for n in specs))
    restored = await backups.restore(settings, summary.path, configuration=config)
    assert (restored.requests_restored, restored.requests_skipped) == (2, 0)
    for name, old in before.items():
        new = cluster.request(name)
        assert new is not None and old is not None
        assert new["spec"] == old["spec"]
        assert new["status"] == old["status"]
        assert new["metadata"]["uid"] != old["metadata"]["uid"]  # really created again
    again = await backups.restore(settings, summary.path, configuration=config)
    assert (again.requests_restored, again.requests_skipped) == (0, 2)
