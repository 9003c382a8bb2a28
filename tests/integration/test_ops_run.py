"""A scripted run against a real ``exportd serve``: metrics count exactly what happened, logs are
JSON lines with request ids and users, and no secret is in any log line.

One server process (fresh counters) runs: two successful exports (DuckDB XLSX, PostgreSQL CSV
through a DSN that carries a password), one export that fails for good, and three refusals
(a bad variable, no token, a malformed token). Then ``/metrics`` must show exactly those counts,
and the server's log and every exporter log must hold neither the tokens, the DB password, the
JWT secret nor the signing key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Server
from tests.integration.conftest import JWT_SECRET, SEED_BODY, write_test_catalog

DB_PASSWORD = "Ops-Test-Db-Passw0rd-42"
SIGNING_KEY = "ops-test-signing-key-9f8e7d6c5b4a"
PG_DSN = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:5432/test"
PG_TYPE = {
    "title": "Numbers from PostgreSQL (tests only)",
    "source": "pg",
    "query": "SELECT g AS n, 'number ' || g AS label FROM generate_series(1, :n) AS g",
    "variables": {"n": {"type": "integer", "required": True, "min": 1, "max": 100000}},
}


def catalog_with_postgres(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = write_test_catalog(directory)
    catalog = yaml.safe_load(path.read_text(encoding="utf-8"))
    catalog["types"]["pgNumbers"] = PG_TYPE
    path.write_text(yaml.safe_dump(catalog), encoding="utf-8")
    return path


@pytest.fixture
def server(tmp_path: Path, sample_db: Path) -> Iterator[Server]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    sources = {
        "sample": {"kind": "duckdb", "path": str(sample_db)},
        "pg": {"kind": "postgres", "dsn": PG_DSN},
    }
    started = Server(
        data_dir,
        sample_db,
        {
            "EXPORTD_SOURCES": json.dumps(sources),
            "EXPORTD_CATALOG_PATH": str(catalog_with_postgres(tmp_path / "catalog")),
            "EXPORTD_SIGNING_KEY": SIGNING_KEY,
            "EXPORTD_LOG_LEVEL": "DEBUG",
            "EXPORTD_LOG_FORMAT": "json",
        },
    ).start()
    yield started
    started.stop()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(scraped: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in scraped if n == name and labels.items() <= lab.items())


def run_script(server: Server) -> dict[str, Any]:
    """The exports and refusals of this test; returns what the test needs to check after."""
    token = server.token("alice")
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "ops-req-0001"}
    with server.client() as client:
        seed = client.post("/export", json=SEED_BODY, headers=headers)
        assert seed.status_code == 200, seed.text
        assert seed.headers["X-Request-ID"] == "ops-req-0001"
        pg = client.post(
            "/export",
            json={"type": "pgNumbers", "fileName": "numbers.csv", "variables": {"n": 500}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert pg.status_code == 200, pg.text
        generated_id = pg.headers["X-Request-ID"]
        assert len(generated_id) >= 16
        broken = client.post(
            "/export",
            json={"type": "brokenQuery", "fileName": "broken.csv"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert broken.status_code >= 400 and broken.json()["reason"] != "InvalidInput"
        bad_variable = client.post(
            "/export",
            json={**SEED_BODY, "variables": {"x": "1; DROP TABLE users", "y": 2}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert bad_variable.status_code == 422
        assert client.post("/export", json=SEED_BODY).status_code == 401
        malformed = {"Authorization": "Bearer not-a-jwt"}
        assert client.post("/v1/exports", json=SEED_BODY, headers=malformed).status_code == 401
        download = httpx.get(seed.json()["url"], timeout=60)
        assert download.status_code == 200
        scraped = samples(client.get("/metrics").text)
    return {"token": token, "scraped": scraped, "url": seed.json()["url"]}


def test_metrics_count_exactly_what_happened_and_logs_hold_no_secret(server: Server) -> None:
    run = run_script(server)
    scraped = run["scraped"]

    # Exports, by type, format and outcome: exactly the three that ran.
    assert value(scraped, "exportd_exports_total") == 3
    succeeded = {"outcome": "succeeded"}
    assert value(scraped, "exportd_exports_total", type="userExport", format="xlsx", **succeeded)
    assert value(scraped, "exportd_exports_total", type="pgNumbers", format="csv", **succeeded) == 1
    assert value(scraped, "exportd_exports_total", type="brokenQuery", outcome="failed") == 1
    assert value(scraped, "exportd_export_failures_total", type="brokenQuery") == 1
    # The exporter's figures arrived through its result line.
    assert value(scraped, "exportd_export_rows_count") == 2
    assert value(scraped, "exportd_export_rows_sum", type="pgNumbers") == 500
    assert value(scraped, "exportd_export_size_bytes_sum", type="pgNumbers") > 0
    assert value(scraped, "exportd_export_duration_seconds_count") == 2
    # Refusals: one bad variable, two without a valid token.
    assert value(scraped, "exportd_export_refusals_total") == 3
    assert value(scraped, "exportd_export_refusals_total", reason="InvalidVariables") == 1
    assert value(scraped, "exportd_export_refusals_total", reason="Unauthenticated") == 2
    # Requests by route template and status.
    assert value(scraped, "exportd_http_requests_total", route="/export", status="200") == 2
    assert value(scraped, "exportd_http_requests_total", route="/export", status="401") == 1
    assert value(scraped, "exportd_http_requests_total", route="/v1/exports", status="401") == 1
    downloads = value(scraped, "exportd_http_requests_total", status="200", method="GET")
    assert downloads >= 1
    assert not [lab for n, lab, _ in scraped if "exp-" in json.dumps(lab)], "ids in labels"
    assert value(scraped, "exportd_exports_queued") == 0
    assert value(scraped, "exportd_exports_running") == 0

    server.stop()  # flush everything; the logs are complete now
    secrets = {
        "token": run["token"],
        "db password": DB_PASSWORD,
        "jwt secret": JWT_SECRET,
        "signing key": SIGNING_KEY,
    }
    server_lines = server.log_path.read_text(encoding="utf-8").splitlines()
    exporter_logs = sorted((server.data_dir / "runner" / "logs").glob("*.log"))
    assert len(exporter_logs) == 3, exporter_logs
    every_line = list(server_lines)
    for path in exporter_logs:
        every_line += path.read_text(encoding="utf-8").splitlines()
    assert len(every_line) > 10
    for path in exporter_logs:  # the exporter's lines are JSON and name their export
        exporter_entries = [json.loads(line) for line in path.read_text().splitlines()]
        assert exporter_entries
        assert {e.get("export_id") for e in exporter_entries} == {path.name.split(".")[0]}
    for line in every_line:
        for what, secret in secrets.items():
            assert secret not in line, f"the {what} is in a log line: {line}"
    signature = run["url"].split("sig=")[-1] if "sig=" in run["url"] else None
    if signature:
        assert not any(signature in line for line in every_line)

    entries = [json.loads(line) for line in server_lines]  # every server line is JSON
    access = [e for e in entries if e.get("logger") == "exportd.api.access"]
    tagged = [e for e in access if e.get("request_id") == "ops-req-0001"]
    assert tagged and tagged[0]["user"] == "alice" and tagged[0]["route"] == "/export"
    assert all({"timestamp", "level", "message"} <= e.keys() for e in entries)
