"""Graceful shutdown, end to end with real processes.

- SIGTERM to ``exportd serve`` while a request is in flight: that request still gets its full
  answer, and the process exits 0 (not killed by the signal).
- SIGTERM to an exporter child in the middle of an export: the exporter exits 75 (retriable),
  nothing is published for that attempt, and the local runner runs it again to success.
- SIGTERM with a drain window: ``/readyz`` answers 503 while requests are still served, then
  the process exits 0, and the export it was running resumes without losing an attempt.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server

DEADLINE_SECONDS = 120
# Long enough to be caught mid-way, short enough for the suite: about a second of rows.
ROWS = 1_500_000


def endless_body(rows: int = ROWS) -> dict[str, Any]:
    return {"type": "endlessRows", "fileName": "rows.csv", "variables": {"n": rows}}


def poll(what: str, probe: Any, deadline: float = DEADLINE_SECONDS) -> Any:
    """Call ``probe`` until it returns something truthy; fail (never hang) after ``deadline``."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def running_export(server: Server, client: httpx.Client) -> dict[str, Any] | None:
    """The caller's newest export once it runs and has written rows."""
    items = client.get("/v1/exports", headers=server.headers()).json()["items"]
    if items and items[0]["phase"] == "Running" and (items[0].get("rows") or 0) > 0:
        found: dict[str, Any] = items[0]
        return found
    return None


def exporter_pid(server: Server, export_id: str) -> int | None:
    """The pid the runner recorded for the export's current attempt (read-only look)."""
    with sqlite3.connect(f"file:{server.data_dir / 'state.sqlite3'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT pid FROM exports WHERE id = ?", (export_id,)).fetchone()
    return int(row[0]) if row and row[0] else None


def stored_files(server: Server) -> list[Path]:
    root = server.data_dir / "files"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_sigterm_to_the_api_lets_the_request_in_flight_finish_and_exits_0(
    make_server: Any,
) -> None:
    server: Server = make_server(EXPORTD_CANCEL_GRACE_SECONDS="60")
    answer: dict[str, Any] = {}

    def export_and_wait() -> None:
        with server.client() as client:
            response = client.post("/export", json=endless_body(), headers=server.headers())
            answer.update(status=response.status_code, body=response.json())

    request = threading.Thread(target=export_and_wait)
    request.start()
    with server.client() as client:
        poll("the export to be running", lambda: running_export(server, client))
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    request.join(DEADLINE_SECONDS)
    assert not request.is_alive()
    assert answer["status"] == 200, answer
    assert answer["body"]["status"] == "success" and answer["body"]["url"].startswith("http")
    assert server.process.wait(DEADLINE_SECONDS) == 0, server.log()
    (stored,) = stored_files(server)
    assert stored.name == "rows.csv"
    assert sum(1 for _ in stored.open("rb")) == ROWS + 1  # the header, then every row


def test_sigterm_to_an_exporter_publishes_nothing_and_the_runner_retries_it(
    make_server: Any,
) -> None:
    # A retry pause long enough to look at storage between the two attempts.
    server: Server = make_server(EXPORTD_RETRY_BACKOFF_SECONDS="3")
    with server.client() as client:
        created = client.post("/v1/exports", json=endless_body(), headers=server.headers())
        assert created.status_code == 202, created.text
        export_id = created.json()["id"]
        poll("rows of the first attempt", lambda: running_export(server, client))
        pid = poll("the exporter's pid", lambda: exporter_pid(server, export_id))
        os.kill(pid, signal.SIGTERM)

        def first_attempt_failed() -> dict[str, Any] | None:
            shown: dict[str, Any] = client.get(
                f"/v1/exports/{export_id}", headers=server.headers()
            ).json()
            assert shown["phase"] != "Succeeded", "the retry pause was missed"
            return shown if (shown.get("error") or {}).get("reason") == "Cancelled" else None

        between = poll("the first attempt to end", first_attempt_failed)
        assert between["phase"] == "Running" and between["attempts"] == 1
        assert stored_files(server) == [], "a cancelled attempt published something"

        def finished() -> dict[str, Any] | None:
            shown: dict[str, Any] = client.get(
                f"/v1/exports/{export_id}", headers=server.headers()
            ).json()
            return shown if shown["phase"] in {"Succeeded", "Failed", "Cancelled"} else None

        done = poll("the retry to finish", finished)
    assert done["phase"] == "Succeeded", done
    assert done["attempts"] == 2 and done["rows"] == ROWS
    (stored,) = stored_files(server)
    assert stored.name == "rows.csv"
    first_log = server.data_dir / "runner" / "logs" / f"{export_id}.1.log"
    assert "Cancelled" in first_log.read_text() or "signal" in first_log.read_text()


def test_sigterm_drains_readiness_then_exits_0_without_using_an_attempt(
    make_server: Any, tmp_path: Path
) -> None:
    """An endless export runs; SIGTERM with a 3 s drain window. Must hold: /readyz answers
    503 "draining" while a status read still answers 200; the process exits 0; the export is
    stored Pending with no attempt used; a new server runs it again as attempt 1."""
    data_dir = tmp_path / "data"
    server: Server = make_server(data_dir, EXPORTD_SHUTDOWN_DRAIN_SECONDS="3")
    with server.client() as client:
        created = client.post("/v1/exports", json=endless_body(10**12), headers=server.headers())
        export_id = created.json()["id"]
        poll("the export to be running", lambda: running_export(server, client))
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        draining = poll(
            "/readyz to answer 503",
            lambda: (r := client.get("/readyz")).status_code == 503 and r,
        )
        assert draining.json()["checks"] == {"shutdown": "draining"}
        still = client.get(f"/v1/exports/{export_id}", headers=server.headers())
        assert still.status_code == 200  # requests are still served during the window
    assert server.process.wait(DEADLINE_SECONDS) == 0, server.log()
    with sqlite3.connect(data_dir / "state.sqlite3") as db:
        phase, attempts = db.execute(
            "SELECT phase, json_extract(status, '$.attempts') FROM exports WHERE id = ?",
            (export_id,),
        ).fetchone()
    assert (phase, attempts or 0) == ("Pending", 0)
    again: Server = make_server(data_dir)
    with again.client() as client:
        resumed = poll("the export to run again", lambda: running_export(again, client))
        assert resumed["id"] == export_id and resumed["attempts"] == 1, resumed
        cancelled = client.delete(f"/v1/exports/{export_id}", headers=again.headers())
        assert cancelled.json()["phase"] == "Cancelled"
