"""Property-based round trips of the type contract (docs/types.md) through the real exporter.

Tried: hypothesis generates rows of values for every contract type (integers of each width,
unbounded and fixed decimals, float4/float8 with NaN and infinities, booleans, any unicode text,
dates and timestamps of the whole range, plus the edges: 1e-20 and pi to 50 digits, ±infinity,
years BC and past 9999, 9999-12-31 23:59:59.999999, year 1 in a zone west of UTC, 16,384 emoji).
They are loaded into the real PostgreSQL and MariaDB (a throwaway schema / database), exported
by ``run_export`` (the exporter's whole in-process path: plan, source, writer, publish) to XLSX
and CSV in the zone America/New_York, and read back with python-calamine and the csv module.

Must hold: every cell equals what the contract says, computed from the generated value with the
standard library alone: a number only when Excel holds it exactly, else the exact text; dates
and date-times as such within Excel's range (to the millisecond, Excel's resolution), else
exact ISO text; no export fails. Example counts are modest to keep the suite fast.
"""

from __future__ import annotations

import csv
import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from python_calamine import CalamineWorkbook

from exportd.contract.spec import ExportSpec, format_of
from exportd.exporter.run import run_export
from exportd.settings import ExporterSettings, SourceConfig
from tests.integration.dbfixtures import MYSQL_DSN, MYSQL_ROOT, PG_DSN
from tests.integration.roundtrip_types import (
    MY_KINDS,
    PG_DATE_EDGES,
    PG_KINDS,
    PG_TIMESTAMP_EDGES,
    PG_TIMESTAMPTZ_EDGES,
    PI,
    ZONE,
    Kind,
    edge_rows,
    literal,
    rows_of,
)

pytestmark = pytest.mark.integration
# No shrinking: each example runs real exports, so shrinking a failure would take minutes;
# the failing rows are reported as generated.
EXAMPLES = settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Server:
    """One database with a table ``rt`` of one column per kind, and exporter settings that
    read it."""

    name: str
    kinds: list[Kind]
    table: str
    settings: ExporterSettings
    connection: Any

    def load(self, rows: list[tuple[Any, ...]]) -> None:
        mysql = self.name == "mysql"
        marks = ", ".join(["%s"] * (len(self.kinds) + 1))
        values = [
            (k, *(literal(v, mysql=mysql) for v in row)) for k, row in enumerate(rows, start=1)
        ]
        with self.connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {self.table}")
            cursor.executemany(f"INSERT INTO {self.table} VALUES ({marks})", values)
        if mysql:
            self.connection.commit()


def _catalog(path: Path, table: str, kinds: list[Kind], source: str) -> Path:
    # k first: calamine drops a trailing row whose cells are all empty (all NULL)
    columns = ", ".join(["k", *(f"c_{kind.name}" for kind in kinds)])
    fast = ", ".join(["k", *(f"c_{kind.name}" for kind in kinds if kind.sql_type != "numeric")])
    types = {
        "all": {"source": source, "timezone": ZONE,
                "query": f"SELECT {columns} FROM {table} ORDER BY k"},
        "fast": {"source": source, "timezone": ZONE,
                 "query": f"SELECT {fast} FROM {table} ORDER BY k"},
    }  # fmt: skip
    path.write_text(yaml.safe_dump({"types": types}), encoding="utf-8")
    return path


def _settings(tmp: Path, table: str, kinds: list[Kind], source: dict[str, str]) -> ExporterSettings:
    return ExporterSettings(
        data_dir=tmp / "data",
        catalog_path=_catalog(tmp / "catalog.yaml", table, kinds, "db"),
        sources={"db": SourceConfig.model_validate(source)},
    )


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    schema = f"exportd_rt_{secrets.token_hex(4)}"
    table = f"{schema}.rt"
    columns = ", ".join(f"c_{kind.name} {kind.sql_type}" for kind in PG_KINDS)
    conn = psycopg.connect(PG_DSN, autocommit=True)
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {table} (k integer PRIMARY KEY, {columns})")
    settings_ = _settings(
        tmp_path_factory.mktemp("rt-pg"), table, PG_KINDS, {"kind": "postgres", "dsn": PG_DSN}
    )
    try:
        yield Server("postgres", PG_KINDS, table, settings_, conn)
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    database = f"exportd_rt_{secrets.token_hex(4)}"
    table = f"{database}.rt"
    columns = ", ".join(f"c_{kind.name} {kind.sql_type}" for kind in MY_KINDS)
    conn = pymysql.connect(**{**MYSQL_ROOT, "charset": "utf8mb4", "autocommit": True})
    with conn.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
        cursor.execute(f"CREATE TABLE {table} (k INT PRIMARY KEY, {columns})")
    dsn = MYSQL_DSN.rsplit("/", 1)[0] + f"/{database}"
    settings_ = _settings(
        tmp_path_factory.mktemp("rt-my"), table, MY_KINDS, {"kind": "mysql", "dsn": dsn}
    )
    try:
        yield Server("mysql", MY_KINDS, table, settings_, conn)
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {database}")
        conn.close()


def export(server: Server, type_: str, file_name: str) -> Path:
    spec = ExportSpec(
        id=f"rt-{secrets.token_hex(6)}",
        type=type_,
        format=format_of(file_name),
        file_name=file_name,
        variables={},
        requested_by="hypothesis",
        requested_at=datetime.now(UTC),
    )
    result = run_export(spec, server.settings)
    path = server.settings.data_dir / "files" / result.object_key
    assert path.exists()
    return path


def xlsx_rows(path: Path) -> list[list[Any]]:
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Export").to_python()
    return [list(row) for row in rows[1:]]


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as file:
        lines = [row for row in csv.reader(file) if not row[0].startswith("# exportd:")]
    return lines[1:]


def same(found: Any, expected: Any) -> bool:
    if isinstance(expected, float) and isinstance(found, str):
        found = float(found)  # CSV: the text's number (PostgreSQL and Python spell it apart)
    if isinstance(expected, float) and isinstance(found, float):
        return found == expected or (math.isnan(found) and math.isnan(expected))
    if isinstance(expected, datetime) and not isinstance(found, datetime):
        # calamine reads a date-time cell at midnight as a date (the cell's style is date-time)
        return type(found) is date and expected == datetime.combine(found, datetime.min.time())
    if isinstance(expected, date) and not isinstance(expected, datetime):
        return type(found) is date and found == expected
    return bool(type(found) is type(expected) and found == expected)


def check(server: Server, rows: list[tuple[Any, ...]], type_: str = "all") -> None:
    kinds = server.kinds if type_ == "all" else [k for k in server.kinds if k.sql_type != "numeric"]
    picked = [server.kinds.index(kind) for kind in kinds]
    server.load(rows)
    found_xlsx = xlsx_rows(export(server, type_, "rt.xlsx"))
    found_csv = csv_rows(export(server, type_, "rt.csv"))
    assert len(found_xlsx) == len(found_csv) == len(rows)
    wrong = []
    for number, row in enumerate(rows):
        assert found_xlsx[number][0] == number + 1 and found_csv[number][0] == str(number + 1)
        for column, (index, kind) in enumerate(zip(picked, kinds, strict=True), start=1):
            value = row[index]
            want_xlsx = "" if value is None else kind.xlsx(value)
            want_csv = "" if value is None else kind.csv(value)
            if not same(found_xlsx[number][column], want_xlsx):
                wrong.append(("xlsx", kind.name, value, found_xlsx[number][column], want_xlsx))
            if not same(found_csv[number][column], want_csv):
                wrong.append(("csv", kind.name, value, found_csv[number][column], want_csv))
    assert not wrong, [tuple(repr(part)[:120] for part in item) for item in wrong]


PG_EDGES = {
    "i8": [2**63 - 1, -(2**63), 10**15 - 1, 10**15],
    "num": [PI, -PI, *(d for d in (PI.scaleb(-30), PI.scaleb(20)))],
    "f4": [0.1, float("nan"), float("inf"), float("-inf"), 3.4028234663852886e38],
    "f8": [0.1, 5e-324, float("nan"), float("-inf"), 1.7976931348623157e308],
    "t": ["😀" * 16_384, "😀" * 16_383 + "x", "\x01=cmd\x1f", "a\rb"],
    "d": PG_DATE_EDGES,
    "ts": PG_TIMESTAMP_EDGES,
    "tz": PG_TIMESTAMPTZ_EDGES,
}


@pytest.mark.parametrize("type_", ["all", "fast"])
def test_postgres_edges_round_trip_exactly(postgres: Server, type_: str) -> None:
    """Every edge of the contract at once, through both PostgreSQL read paths: "all" has an
    unbounded numeric (psycopg source), "fast" not (DuckDB's scanner)."""
    check(postgres, edge_rows(postgres.kinds, PG_EDGES), type_)


@EXAMPLES
@given(rows=rows_of(PG_KINDS))
def test_postgres_values_round_trip_exactly(postgres: Server, rows: list[tuple[Any, ...]]) -> None:
    """Generated rows of every PostgreSQL contract type, both formats, psycopg source."""
    check(postgres, rows)


@EXAMPLES
@given(rows=rows_of(PG_KINDS))
def test_postgres_fast_path_values_round_trip_exactly(
    postgres: Server, rows: list[tuple[Any, ...]]
) -> None:
    """Generated rows without the unbounded numeric: XLSX read through DuckDB's scanner."""
    check(postgres, rows, "fast")


MY_EDGES = {
    "i8": [2**63 - 1, -(2**63), 10**15],
    "u8": [2**64 - 1, 10**15 - 1],
    "f4": [0.1, 3.4028234663852886e38, 1.1754943508222875e-38],
    "t": ["😀" * 16_384, "\x01=cmd\x1f", "a\rb", "-1"],
    "d": [date(1000, 1, 1), date(9999, 12, 31), date(1900, 2, 28)],
    "ts": [datetime(9999, 12, 31, 23, 59, 59, 999000), datetime(1000, 1, 1)],
    "tz": [datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC), datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)],
}


def test_mariadb_edges_round_trip_exactly(mariadb: Server) -> None:
    """Every MariaDB edge of the contract at once, both formats."""
    check(mariadb, edge_rows(mariadb.kinds, MY_EDGES))


@EXAMPLES
@given(rows=rows_of(MY_KINDS))
def test_mariadb_values_round_trip_exactly(mariadb: Server, rows: list[tuple[Any, ...]]) -> None:
    """Generated rows of every MariaDB contract type, both formats."""
    check(mariadb, rows)
