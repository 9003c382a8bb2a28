"""The seed contract against a running embedded server (a real ``exportd serve`` process).

What is tried: the exact seed request with a valid token, then a GET on the returned link.
What must hold: the answer is exactly ``{"status":"success","url":...}``; the link serves an
XLSX (or CSV) whose data rows equal the sample database's rows for tiers 1-2, and whose request
and completion timestamps are present with completion >= request.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import openpyxl
import pandas
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

SEED = {
    "type": "userExport",
    "returnType": "url",
    "fileName": "myexport.xlsx",
    "variables": {"x": 1, "y": 2},
}
COMPARED = ("id", "name", "email", "tier", "country")


def expected_rows(sample_db: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(sample_db), read_only=True) as con:
        return con.execute(
            f"SELECT {', '.join(COMPARED)} FROM users WHERE tier BETWEEN 1 AND 2 ORDER BY id"
        ).fetchall()


def export(server: Server, body: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    with server.client() as client:
        answer = client.post("/export", json=body, headers=server.headers())
        assert answer.status_code == 200, answer.text
        payload = answer.json()
        assert set(payload) == {"status", "url"}
        assert payload["status"] == "success"
        url = payload["url"]
        assert url.startswith(f"{server.base_url}/v1/files/")
        download = client.get(url)  # no token: the signed link is the credential
        assert download.status_code == 200, download.text
        return url, download.content, dict(download.headers)


def test_seed_request_returns_exact_json_and_a_correct_xlsx(
    server: Server, sample_db: Path, tmp_path: Path
) -> None:
    """The seed request: exact JSON; the XLSX opens with openpyxl, holds the tier 1-2 users
    in id order, and its info sheet has requested and completed times, completed >= requested."""
    before = datetime.now(UTC)
    _, content, headers = export(server, SEED)
    assert headers["content-type"].startswith("application/vnd.openxmlformats")
    assert 'filename="myexport.xlsx"' in headers["content-disposition"]
    path = tmp_path / "myexport.xlsx"
    path.write_bytes(content)

    book = openpyxl.load_workbook(path, read_only=True)
    rows = book["Export"].iter_rows(values_only=True)
    header = list(next(rows))
    indexes = [header.index(name) for name in COMPARED]
    got = [tuple(row[i] for i in indexes) for row in rows]
    assert got == expected_rows(sample_db)
    assert len(got) == 40_000

    info = {row[0]: row for row in book["Export info"].iter_rows(values_only=True)}
    requested = datetime.fromisoformat(info["Requested at"][2])
    completed = datetime.fromisoformat(info["Completed at"][2])
    assert before.replace(microsecond=0) <= requested.replace(microsecond=0)
    assert completed >= requested


def test_seed_request_as_csv(server: Server, sample_db: Path) -> None:
    """The same request with fileName x.csv: a CSV that the csv module and pandas read with no
    options, the header row first and the tier 1-2 users as the rows (nothing else: no comment
    line, no trailer); the request and completion times are in the sidecar the export links
    to (``metadataUrl``), completed >= requested."""
    _, content, headers = export(server, {**SEED, "fileName": "x.csv"})
    assert headers["content-type"].startswith("text/csv")
    assert 'filename="x.csv"' in headers["content-disposition"]
    text = content.decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert reader.fieldnames is not None and list(reader.fieldnames[:4]) == list(COMPARED[:4])
    got = [(int(r["id"]), r["name"], r["email"], int(r["tier"]), r["country"]) for r in reader]
    assert got == expected_rows(sample_db)
    frame = pandas.read_csv(io.BytesIO(content))
    assert list(frame.columns[:4]) == list(COMPARED[:4])
    assert len(frame) == 40_000 and frame["id"].iloc[0] == 1
    assert [tuple(r) for r in frame[list(COMPARED)].itertuples(index=False)] == got

    with server.client() as client:
        listing = client.get("/v1/exports", params={"limit": 1}, headers=server.headers())
        sidecar = client.get(listing.json()["items"][0]["metadataUrl"]).json()
    requested = datetime.fromisoformat(sidecar["requestedAt"])
    completed = datetime.fromisoformat(sidecar["completedAt"])
    assert completed >= requested and sidecar["rows"] == 40_000
