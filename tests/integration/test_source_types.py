"""Sources deliver precisely typed Arrow batches, the same for PostgreSQL, MariaDB and DuckDB.

The shared ``typed`` table (see ``dbfixtures``) is read through each real source; the columns
must carry the documented Arrow types and exactly the values inserted. Then the types a
spreadsheet user rarely sees but a database has (unbounded numeric, json, unsigned integers,
MySQL zero dates, ...) are checked per server against the mapping in each module's docstring.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pyarrow as pa
import pytest

from exportd.contract.errors import PermanentFailure
from exportd.exporter.cells import DECIMAL_TEXT, DecimalText
from exportd.exporter.sources import QueryOptions, open_source
from exportd.settings import SourceConfig
from tests.integration.db_admin import mysql_execute, pg_execute
from tests.integration.dbfixtures import (
    COLUMNS,
    SOURCE_KINDS,
    TYPED_ROWS_BY_ID,
    TypedDatabases,
    mysql_connect,
    typed_databases_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration

EXPECTED_TYPES = {
    "id": pa.int64(),
    "n": pa.int32(),
    "amount": pa.decimal128(12, 2),
    "ratio": pa.float64(),
    "name": pa.string(),
    "born": pa.date32(),
    "seen_at": pa.timestamp("us"),
    "happened_at": pa.timestamp("us", tz="UTC"),
    "active": pa.bool_(),
    "note": pa.string(),
}
UTC_NAMES = {"UTC", "Etc/UTC", "+00:00"}


def read_batches(
    config: SourceConfig, sql: str, params: Mapping[str, Any] | None = None, batch_rows: int = 2
) -> list[pa.RecordBatch]:
    with open_source(config) as source:
        return list(source.stream(sql, params or {}, QueryOptions(batch_rows=batch_rows)))


def typed_query(databases: TypedDatabases) -> str:
    return f"SELECT {', '.join(COLUMNS)} FROM {databases.table} WHERE id >= :min_id ORDER BY id"


def normalized_type(arrow_type: pa.DataType) -> pa.DataType:
    """DuckDB names UTC ``Etc/UTC``; the instant is the same, so compare as ``UTC``."""
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz in UTC_NAMES:
        return pa.timestamp(arrow_type.unit, tz="UTC")
    return arrow_type


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_typed_table_streams_in_batches_with_precise_types_and_exact_values(
    typed_databases: TypedDatabases, kind: str
) -> None:
    """4 rows with batch_rows=2 arrive as 2 batches typed as documented, holding exactly the
    inserted values (16-digit ids intact, decimals exact, instants in UTC, NULLs as None)."""
    batches = read_batches(
        typed_databases.source(kind), typed_query(typed_databases), {"min_id": 0}
    )
    assert [batch.num_rows for batch in batches] == [2, 2]
    table = pa.Table.from_batches(batches)
    assert {f.name: normalized_type(f.type) for f in table.schema} == EXPECTED_TYPES
    rows = [tuple(row.values()) for row in table.to_pylist()]
    assert rows == TYPED_ROWS_BY_ID
    # equality of aware datetimes ignores the zone object; make sure it really is UTC
    assert table.column("happened_at")[0].as_py().utcoffset() == timedelta(0)


def test_three_sources_give_identical_arrow_tables(typed_databases: TypedDatabases) -> None:
    """PostgreSQL, MariaDB and DuckDB give equal Arrow tables (types and values) for the same
    query; only DuckDB's spelling of UTC is normalized."""
    tables = {}
    for kind in SOURCE_KINDS:
        table = pa.Table.from_batches(
            read_batches(typed_databases.source(kind), typed_query(typed_databases), {"min_id": 0})
        )
        schema = pa.schema([pa.field(f.name, normalized_type(f.type)) for f in table.schema])
        tables[kind] = table.cast(schema)
    assert tables["postgres"].equals(tables["mysql"])
    assert tables["postgres"].equals(tables["duckdb"])


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_empty_result_still_yields_one_batch_with_the_schema(
    typed_databases: TypedDatabases, kind: str
) -> None:
    """A query matching nothing yields a single zero-row batch carrying the full schema."""
    batches = read_batches(
        typed_databases.source(kind), typed_query(typed_databases), {"min_id": 10**17}
    )
    assert len(batches) == 1
    assert batches[0].num_rows == 0
    assert {f.name: f.type for f in batches[0].schema} == EXPECTED_TYPES


@pytest.fixture
def pg_odd_table(typed_databases: TypedDatabases) -> Iterator[str]:
    table = f"{typed_databases.schema}.pg_odd"
    pg_execute(
        f"CREATE TABLE {table} (k int, free numeric, wide numeric(50, 20), "
        "small smallint, tiny_f real, j jsonb, u uuid, iv interval, arr int[], b bytea, "
        "t time, ch char(3), nm name)",
        f"INSERT INTO {table} VALUES (1, 1.5, 123.456, 7, 1.5, "
        """'{"a": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 mon 2 days', """
        "'{1,NULL,3}', '\\x00ff', '13:45:01.25', 'ab', 'nm'), "
        "(2, 2.123456789012345, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
        "NULL, NULL)",
    )
    yield table
    pg_execute(f"DROP TABLE {table}")


def test_postgres_other_types_follow_the_documented_mapping(pg_odd_table: str) -> None:
    """Unbounded numeric and numeric(50, 20) -> the exact decimal text, no digit lost;
    json, uuid, interval and arrays arrive as PostgreSQL's own text; bytea as binary."""
    config = SourceConfig(kind="postgres", dsn="host=127.0.0.1 user=postgres dbname=test")
    table = pa.Table.from_batches(read_batches(config, f"SELECT * FROM {pg_odd_table} ORDER BY k"))
    types = {f.name: f.type for f in table.schema}
    assert types == {
        "k": pa.int32(),
        "free": DECIMAL_TEXT,
        "wide": DECIMAL_TEXT,
        "small": pa.int16(),
        "tiny_f": pa.float32(),
        "j": pa.string(),
        "u": pa.string(),
        "iv": pa.string(),
        "arr": pa.string(),
        "b": pa.binary(),
        "t": pa.time64("us"),
        "ch": pa.string(),
        "nm": pa.string(),
    }
    first, second = table.to_pylist()
    assert first["free"] == "1.5"
    assert second["free"] == "2.123456789012345"  # every digit kept
    assert first["wide"] == "123.45600000000000000000"
    assert first["j"] == '{"a": [1, 2]}'
    assert first["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert first["iv"] == "1 mon 2 days"
    assert first["arr"] == "{1,NULL,3}"
    assert first["b"] == b"\x00\xff"
    assert first["t"] == time(13, 45, 1, 250000)
    assert first["ch"] == "ab "


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'NaN'::numeric", "NaN"),
        ("1e30::numeric", "1000000000000000000000000000000"),
        ("1e-20::numeric", "0.00000000000000000001"),
        ("'infinity'::date", 2**31 - 1),
        ("'-infinity'::timestamptz", -(2**63 - 1)),
        ("'0044-03-15 BC'::date", -735_160),
        ("'10000-01-01 00:00:00.5'::timestamp", 253_402_300_800_500_000),
    ],
)
def test_postgres_values_python_cannot_hold_arrive_exactly(
    expression: str, expected: str | int
) -> None:
    """Values Python's Decimal/date types would round or reject (NaN, huge and tiny numerics,
    infinities, years BC and past 9999) arrive exactly: numerics as their exact text, dates
    and timestamps as Arrow's integer (infinity as DuckDB's sentinel)."""
    config = SourceConfig(kind="postgres", dsn="host=127.0.0.1 user=postgres dbname=test")
    (batch,) = read_batches(config, f"SELECT {expression} AS v")
    column = batch.column(0)
    if isinstance(column.type, DecimalText):
        assert column.storage.to_pylist() == [expected]
    else:
        assert column.view(
            pa.int32() if pa.types.is_date32(column.type) else pa.int64()
        ).to_pylist() == [expected]


@pytest.fixture
def mysql_odd_table(typed_databases: TypedDatabases) -> Iterator[str]:
    table = f"{typed_databases.schema}.my_odd"
    mysql_execute(
        "SET SESSION sql_mode = ''",  # allows the zero dates apps still have
        f"CREATE TABLE {table} (k INT, ubig BIGINT UNSIGNED, utiny TINYINT UNSIGNED, "
        "small SMALLINT, zd DATE, zdt DATETIME, t TIME(2), bits BIT(8), flag BIT(1), "
        "wide DECIMAL(50,20), j JSON, bin VARBINARY(4), e ENUM('a','b'), y YEAR, "
        "f FLOAT, bool_col BOOL) CHARACTER SET utf8mb4",
        f"INSERT INTO {table} VALUES (1, 18446744073709551615, 255, -32768, "
        "'0000-00-00', '0000-00-00 00:00:00', '13:45:01.25', b'10000001', b'1', "
        """123.456, '{"a": [1, 2]}', X'00ff', 'b', 2024, 1.5, TRUE), """
        "(2, NULL, NULL, NULL, '2024-01-31', '2024-01-31 10:00:00', NULL, NULL, b'0', "
        "12345678901234567890123456.123456789012345, NULL, NULL, NULL, NULL, NULL, 2)",
    )
    yield table
    mysql_execute(f"DROP TABLE {table}")


def test_mysql_other_types_follow_the_documented_mapping(mysql_odd_table: str) -> None:
    """Unsigned integers keep their full range, zero dates become NULL, TIME is a time of day,
    BIT(1) a boolean, BIT(n) a number, DECIMAL(50, 20) its exact text, JSON text,
    VARBINARY binary, TINYINT(1) holding 2 is true."""
    config = SourceConfig(kind="mysql", dsn="mysql://root@127.0.0.1:3306/test")
    table = pa.Table.from_batches(
        read_batches(config, f"SELECT * FROM {mysql_odd_table} ORDER BY k")
    )
    types = {f.name: f.type for f in table.schema}
    assert types == {
        "k": pa.int32(),
        "ubig": pa.uint64(),
        "utiny": pa.uint8(),
        "small": pa.int16(),
        "zd": pa.date32(),
        "zdt": pa.timestamp("us"),
        "t": pa.time64("us"),
        "bits": pa.uint64(),
        "flag": pa.bool_(),
        "wide": DECIMAL_TEXT,
        "j": pa.string(),
        "bin": pa.binary(),
        "e": pa.string(),
        "y": pa.int16(),
        "f": pa.float32(),
        "bool_col": pa.bool_(),
    }
    first, second = table.to_pylist()
    assert first["ubig"] == 18446744073709551615
    assert first["utiny"] == 255
    assert first["small"] == -32768
    assert (first["zd"], first["zdt"]) == (None, None)
    assert (second["zd"], second["zdt"]) == (date(2024, 1, 31), datetime(2024, 1, 31, 10))
    assert first["t"] == time(13, 45, 1, 250000)
    assert (first["bits"], first["flag"], second["flag"]) == (129, True, False)
    assert first["wide"] == "123.45600000000000000000"
    assert second["wide"] == "12345678901234567890123456.12345678901234500000"
    assert first["j"] == '{"a": [1, 2]}'
    assert first["bin"] == b"\x00\xff"
    assert (first["e"], first["y"], first["f"]) == ("b", 2024, 1.5)
    assert (first["bool_col"], second["bool_col"]) == (True, True)


def test_mysql_timestamp_is_the_utc_instant_whatever_zone_wrote_it(
    typed_databases: TypedDatabases,
) -> None:
    """A TIMESTAMP written by a session in zone +05:00 as 17:00 is read back as 12:00 UTC:
    the source's session zone is +00:00, so instants are never shifted."""
    table = f"{typed_databases.schema}.my_zone"
    conn = mysql_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {table} (ts TIMESTAMP NULL, dt DATETIME)")
            cursor.execute("SET SESSION time_zone = '+05:00'")
            cursor.execute(f"INSERT INTO {table} VALUES (%s, %s)", ("2024-06-01 17:00:00",) * 2)
        config = SourceConfig(kind="mysql", dsn="mysql://root@127.0.0.1:3306/test")
        (batch,) = read_batches(config, f"SELECT ts, dt FROM {table}")
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP TABLE {table}")
        conn.close()
    assert batch.to_pylist() == [
        {"ts": datetime(2024, 6, 1, 12, 0, tzinfo=UTC), "dt": datetime(2024, 6, 1, 17, 0)}
    ]


@pytest.mark.parametrize("value", ["25:00:00", "-01:00:00"])
def test_mysql_time_outside_one_day_fails_with_a_clear_reason(value: str) -> None:
    """MySQL TIME is a duration; one that is not a time of day fails (UnsupportedValue)."""
    config = SourceConfig(kind="mysql", dsn="mysql://root@127.0.0.1:3306/test")
    with pytest.raises(PermanentFailure) as failure:
        read_batches(config, "SELECT CAST(:v AS TIME) AS t", {"v": value})
    assert failure.value.reason == "UnsupportedValue"
    assert value in failure.value.message
