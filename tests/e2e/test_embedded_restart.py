"""A crash of the API loses no request: kill it (SIGKILL) while an export is queued, restart.

What is tried: one slot; export A runs "forever", export B (the seed) is Queued behind it; the
API process is SIGKILLed; a new API starts on the same data directory.
What must hold: at the kill, the store holds B as Pending (its queue place is derived, never
stored) and A as Running; A's exporter dies with the API (parent-death signal); after the
restart A runs again on attempt 1 (a crash of the API does not use up the export's attempts)
and B, once A is cancelled, completes and its link serves a valid XLSX.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from tests.e2e.conftest import Server
from tests.integration.conftest import ENDLESS_BODY, SEED_BODY

pytestmark = pytest.mark.e2e
DEADLINE_SECONDS = 120


def wait_for(server: Server, export_id: str, holds: Any) -> dict[str, Any]:
    give_up = time.monotonic() + DEADLINE_SECONDS
    with server.client() as client:
        while True:
            shown: dict[str, Any] = client.get(
                f"/v1/exports/{export_id}", headers=server.headers()
            ).json()
            if holds(shown):
                return shown
            assert time.monotonic() < give_up, f"{export_id} stuck: {shown}"
            time.sleep(0.1)


def stored(data_dir: Path, export_id: str) -> tuple[str, int | None]:
    with sqlite3.connect(data_dir / "state.sqlite3") as conn:
        phase, pid = conn.execute(
            "SELECT phase, pid FROM exports WHERE id = ?", (export_id,)
        ).fetchone()
    return phase, pid


def wait_until_dead(pid: int) -> None:
    give_up = time.monotonic() + DEADLINE_SECONDS
    while Path(f"/proc/{pid}").exists() and "State:\tZ" not in _status(pid):
        assert time.monotonic() < give_up, f"exporter {pid} outlived its API"
        time.sleep(0.1)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "State:\tZ"


def test_a_queued_export_survives_sigkill_of_the_api(make_server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first: Server = make_server(data_dir, EXPORTD_MAX_RUNNING_EXPORTS="1")
    with first.client() as client:
        a = client.post("/v1/exports", json=ENDLESS_BODY, headers=first.headers()).json()["id"]
        wait_for(first, a, lambda s: s["phase"] == "Running" and s.get("rows"))
        b = client.post("/v1/exports", json=SEED_BODY, headers=first.headers()).json()["id"]
    wait_for(first, b, lambda s: s["phase"] == "Queued" and s["queuePosition"] == 1)

    first.kill()
    assert stored(data_dir, b)[0] == "Pending"
    phase_a, pid_a = stored(data_dir, a)
    assert phase_a == "Running" and pid_a is not None
    wait_until_dead(pid_a)

    second: Server = make_server(data_dir, EXPORTD_MAX_RUNNING_EXPORTS="1")
    retried = wait_for(second, a, lambda s: s["phase"] == "Running" and s.get("rows"))
    assert retried["attempts"] == 1
    with second.client() as client:
        assert client.delete(f"/v1/exports/{a}", headers=second.headers()).status_code == 200
    done = wait_for(second, b, lambda s: s["phase"] == "Succeeded")
    assert done["rows"] == 40_000
    with second.client() as client:
        download = client.get(done["url"])
    assert download.status_code == 200
    path = tmp_path / "restored.xlsx"
    path.write_bytes(download.content)
    sheet = openpyxl.load_workbook(path, read_only=True)["Export"]
    assert sum(1 for _ in sheet.iter_rows()) == 40_001  # header + rows
    assert not (data_dir / "files" / "exports" / a / "endless.csv").exists()
