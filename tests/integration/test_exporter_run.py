"""``run_export`` end to end on the real sample database: DuckDB -> XLSX/CSV -> local storage.

What must hold: the stored file has exactly the rows of the query and both timestamps; on
failure or cancel nothing is at the final key and no temporary file remains; a repeated run
publishes nothing new; hostile variable values never reach the SQL text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from pathlib import Path

import duckdb
import openpyxl
import pytest
import yaml

from exportd.contract.errors import Cancelled, InvalidInput, PermanentFailure
from exportd.contract.spec import csv_sidecar_key
from exportd.exporter.run import run_export
from exportd.exporter.writers.xlsx import DATA_SHEET, METADATA_SHEET
from exportd.settings import ExporterSettings
from exportd.storage.local import LocalStorage
from tests.conftest import SpecFactory

pytestmark = pytest.mark.integration

SHIPPED_CATALOG = Path(__file__).resolve().parents[2] / "src/exportd/data/catalog.yaml"
TIERS = {"x": {"type": "integer", "min": 1, "max": 5}, "y": {"type": "integer", "min": 1, "max": 5}}
TEST_TYPES = {
    # 40,000 users x 100 copies: long enough to be cancelled while it streams.
    "slowUsers": {
        "query": "SELECT u.id, u.name, r.range AS copy FROM users u, range(100) r "
        "WHERE u.tier BETWEEN :x AND :y",
        "variables": TIERS,
    },
    # Never yields a row: only an interrupt of the running query can stop it.
    "endless": {"query": "SELECT count(*) AS n FROM range(1000000000000)"},
    # Fails on its last row, after many batches have been written (DuckDB computes ahead of
    # the reader, so the failing row must come late).
    "failsMidway": {
        "query": "SELECT CASE WHEN u.id = 100000 AND r.range = 9 THEN error('boom') "
        "ELSE u.id END AS id FROM users u, range(10) r"
    },
    "limited": {"query": "SELECT id FROM users ORDER BY id", "maxRows": 10},
    "plainCsv": {
        "query": "SELECT id, notes FROM users WHERE id <= 3 ORDER BY id",
        "metadata": False,
        "csvBom": True,
    },
    "commentedRawCsv": {
        "query": "SELECT id, notes FROM users WHERE id <= 3 ORDER BY id",
        "csvLayout": "comments",
        "csvNeutralizeFormulas": False,
    },
}


@pytest.fixture
def settings(exporter_settings: ExporterSettings, tmp_path: Path) -> ExporterSettings:
    catalog = yaml.safe_load(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    catalog["types"].update(TEST_TYPES)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog), encoding="utf-8")
    return exporter_settings.model_copy(update={"catalog_path": path})


def _storage(settings: ExporterSettings) -> LocalStorage:
    assert settings.storage.root is not None
    return LocalStorage(settings.storage.root, lambda: pytest.fail("signing not needed"))


def _leftovers(settings: ExporterSettings) -> list[Path]:
    """Files anywhere under the data dir except the shared database (there is none there)."""
    return sorted(p for p in settings.data_dir.rglob("*") if p.is_file())


def test_seed_request_as_xlsx_holds_every_row_and_both_timestamps(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    spec = make_export_spec(file_name="myexport.xlsx")
    seen: list[int] = []
    result = run_export(spec, settings, on_progress=seen.append)
    path = _storage(settings).path_of(spec.object_key)
    assert (result.rows_read, result.rows_written, result.sheets) == (40_000, 40_000, 1)
    assert result.bytes == path.stat().st_size
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.created is True
    assert seen[-1] == 40_000
    book = openpyxl.load_workbook(path, read_only=True)
    rows = list(book[DATA_SHEET].iter_rows(values_only=True))
    assert rows[0][:4] == ("id", "name", "email", "tier")
    assert len(rows) == 40_001
    assert {row[3] for row in rows[1:]} == {1, 2}
    assert rows[1][0] == 1
    assert rows[1][9] == '=HYPERLINK("http://x","y")'
    info = {row[0]: row[1] for row in book[METADATA_SHEET].iter_rows(min_row=2, values_only=True)}
    assert info["Completed at"] >= info["Requested at"]
    assert info["Rows"] == 40_000
    assert _leftovers(settings) == [path]


def test_seed_request_as_csv_starts_with_its_header_and_keeps_times_beside_it(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    """The default CSV layout: the header row first, every row, nothing else (no comment line,
    no trailer), formula text neutralized; the request and completion times, the row count and
    the checksum are in the JSON sidecar beside the file."""
    spec = make_export_spec(file_name="x.csv")
    result = run_export(spec, settings)
    path = _storage(settings).path_of(spec.object_key)
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))
    assert rows[0][:4] == ["id", "name", "email", "tier"]
    assert len(rows) == 40_001
    assert rows[1][0] == "1"
    assert rows[1][9] == '\'=HYPERLINK("http://x","y")'
    sidecar = json.loads(_storage(settings).path_of(csv_sidecar_key(spec.object_key)).read_text())
    assert sidecar["requestedAt"] == _iso(spec.requested_at)
    assert sidecar["completedAt"] == _iso(result.completed_at)
    assert (sidecar["export"], sidecar["rows"], sidecar["sha256"]) == (
        spec.id,
        40_000,
        result.sha256,
    )
    assert result.completed_at >= spec.requested_at


def test_comments_layout_and_raw_formulas_per_export_type(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    """An export type with ``csvLayout: comments`` and ``csvNeutralizeFormulas: false``: the
    ``# exportd:`` request line first and completion line last, formula text as it is, and no
    sidecar."""
    spec = make_export_spec(type="commentedRawCsv", variables={}, file_name="c.csv")
    result = run_export(spec, settings)
    lines = _storage(settings).path_of(spec.object_key).read_bytes().decode().split("\r\n")
    assert lines[0].startswith(f"# exportd: export={spec.id} type=commentedRawCsv requested_at=")
    assert lines[-2] == f"# exportd: completed_at={_iso(result.completed_at)} rows=3"
    rows = list(csv.reader(io.StringIO("\r\n".join(lines[1:-2]), newline="")))
    assert rows[0] == ["id", "notes"]
    assert rows[1] == ["1", '=HYPERLINK("http://x","y")']
    assert not _storage(settings).path_of(csv_sidecar_key(spec.object_key)).exists()


def _iso(moment: object) -> str:
    from exportd.exporter.writers.csv import iso_utc

    assert hasattr(moment, "astimezone")
    return iso_utc(moment)  # type: ignore[arg-type]


def test_rerun_of_the_same_spec_publishes_nothing_new(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    spec = make_export_spec(file_name="again.csv")
    first = run_export(spec, settings)
    second = run_export(spec, settings)
    assert (first.created, second.created) == (True, False)
    assert second.sha256 == first.sha256
    final = _storage(settings).path_of(spec.object_key)
    assert sorted(p.name for p in final.parent.iterdir()) == ["again.csv", "again.csv.meta.json"]
    assert _leftovers(settings) == [final, final.with_name("again.csv.meta.json")]


def test_cancel_while_rows_stream_leaves_nothing(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    cancel = threading.Event()
    spec = make_export_spec(type="slowUsers", file_name="slow.xlsx")
    with pytest.raises(Cancelled):
        run_export(spec, settings, on_progress=lambda rows: cancel.set(), cancel=cancel)
    assert not _storage(settings).exists(spec.object_key)
    assert _leftovers(settings) == []


def test_cancel_reaches_a_query_that_yields_no_rows(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    spec = make_export_spec(type="endless", variables={}, file_name="never.csv")
    with pytest.raises(Cancelled):
        run_export(spec, settings, cancel=cancel)
    timer.join()
    assert _leftovers(settings) == []


def test_query_failing_midway_publishes_no_partial_file(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    spec = make_export_spec(type="failsMidway", variables={}, file_name="broken.csv")
    written: list[int] = []
    with pytest.raises(PermanentFailure) as caught:
        run_export(spec, settings, on_progress=written.append)
    assert caught.value.reason == "QueryError"
    assert "boom" in caught.value.message
    assert written  # some batches had been written before the failure
    assert not _storage(settings).exists(spec.object_key)
    assert _leftovers(settings) == []


def test_more_rows_than_max_rows_fails_instead_of_truncating(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    spec = make_export_spec(type="limited", variables={}, file_name="limited.csv")
    with pytest.raises(PermanentFailure) as caught:
        run_export(spec, settings)
    assert caught.value.reason == "TooManyRows"
    assert _leftovers(settings) == []


@pytest.mark.parametrize("hostile", ["1; DROP TABLE users", "' OR 1=1 --"])
def test_injection_in_typed_variables_is_rejected(
    settings: ExporterSettings, make_export_spec: SpecFactory, hostile: str
) -> None:
    for variables in ({"x": hostile, "y": 2}, {"x": 1, "y": hostile}):
        with pytest.raises(InvalidInput) as caught:
            run_export(make_export_spec(variables=variables), settings)
        assert {e.field for e in caught.value.errors} <= {"variables.x", "variables.y"}
    country_spec = make_export_spec(type="usersByCountry", variables={"country": hostile})
    with pytest.raises(InvalidInput):
        run_export(country_spec, settings)
    assert _leftovers(settings) == []


def test_injection_in_free_text_variables_is_bound_harmlessly(
    settings: ExporterSettings, make_export_spec: SpecFactory, sample_db: Path
) -> None:
    spec = make_export_spec(
        type="menuCategoriesByMuscle",
        variables={"a": "1; DROP TABLE users", "b": "' OR 1=1 --"},
        file_name="menus.csv",
    )
    result = run_export(spec, settings)
    assert result.rows_written == 0
    honest = make_export_spec(
        type="menuCategoriesByMuscle",
        variables={"a": "muscle1", "b": "muscle2"},
        file_name="menus.csv",
    )
    run_export(honest, settings)
    lines = _storage(settings).path_of(honest.object_key).read_bytes().decode().split("\r\n")
    assert lines[0:4] == ['"category","menus"', '"training",3', '"balance",1', '"stretch",1']
    with duckdb.connect(str(sample_db), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM users").fetchone() == (100_000,)


def test_metadata_switched_off_and_bom_per_export_type(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    spec = make_export_spec(type="plainCsv", variables={}, file_name="plain.csv")
    run_export(spec, settings)
    data = _storage(settings).path_of(spec.object_key).read_bytes()
    assert data.startswith(b'\xef\xbb\xbf"id","notes"\r\n1,')
    assert b"# exportd" not in data


def test_unknown_export_type_fails_before_any_file_exists(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    with pytest.raises(InvalidInput) as caught:
        run_export(make_export_spec(type="noSuchType"), settings)
    assert caught.value.reason == "UnknownExportType"
    assert _leftovers(settings) == []
