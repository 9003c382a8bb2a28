"""``exportd load-sample``: copy the sample data set into a PostgreSQL or MySQL/MariaDB source.

Why: the compose stack's databases must hold the same rows as the embedded DuckDB sample, so an
export gives the same file from any source. Rather than a second copy of the data as SQL files
that can drift, the tables are built by :func:`exportd.sample.sampledb.build_sample` in an in-memory
DuckDB and copied, columns, keys and rows, into the target; the column types follow DuckDB's
(see ``_TYPES``).

The target is a configured source (``EXPORTD_SOURCES__<NAME>__KIND``, ``__DSN``,
``__PASSWORD_FILE``), named on the command line; its account must be allowed to create tables.

Idempotent: each table is dropped, created and filled again, so running twice leaves the same
data. PostgreSQL does all of it in one transaction: a reader sees the old tables or the new ones,
and a failed load changes nothing. MySQL commits every ``DROP``/``CREATE`` on its own, so a reader
during a load may find a table missing or empty, and a failed load is repaired by running again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import IO, TYPE_CHECKING, Any

import duckdb

from exportd.contract.errors import InvalidInput
from exportd.sample.sampledb import DATA_SETS, build_sample
from exportd.settings import ExporterSettings, SourceConfig

if TYPE_CHECKING:  # the drivers are imported by the loader that needs one, not both each time
    import psycopg
    from psycopg import sql

BATCH_ROWS = 5_000
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_DECIMAL = re.compile(r"^DECIMAL\((\d+),(\d+)\)$")
# DuckDB type -> (PostgreSQL, MySQL). MySQL's VARCHAR needs a length: 255 fits every sample value,
# and strict mode (set for the session) refuses a longer one instead of cutting it. TIMESTAMP,
# not DATETIME: it is an instant (stored in UTC), as TIMESTAMP WITH TIME ZONE is.
_TYPES: dict[str, tuple[str, str]] = {
    "BIGINT": ("bigint", "BIGINT"),
    "INTEGER": ("integer", "INT"),
    "VARCHAR": ("varchar", "VARCHAR(255)"),
    "BOOLEAN": ("boolean", "BOOLEAN"),
    "DATE": ("date", "DATE"),
    "TIMESTAMP WITH TIME ZONE": ("timestamptz", "TIMESTAMP(6)"),
}


class Dialect(IntEnum):
    """The position of a dialect's type name in ``_TYPES``."""

    POSTGRES = 0
    MYSQL = 1


@dataclass(frozen=True)
class Column:
    name: str
    duckdb_type: str
    nullable: bool

    def sql_type(self, dialect: Dialect) -> str:
        if decimal := _DECIMAL.match(self.duckdb_type):
            return f"{('numeric', 'DECIMAL')[dialect]}({decimal[1]}, {decimal[2]})"
        try:
            return _TYPES[self.duckdb_type][dialect]
        except KeyError:
            raise ValueError(f"no mapping for sample column type {self.duckdb_type}") from None


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]


@dataclass(frozen=True)
class Loaded:
    table: str
    rows: int


def run_command(args: Any, out: IO[str]) -> int:
    """``exportd load-sample SOURCE... [--only DATA_SET]`` (parsed by :mod:`exportd.cli`)."""
    settings = ExporterSettings()
    tables = tables_of(args.only or list(DATA_SETS))
    configs = [_source(settings, name) for name in args.sources]
    for name, config in zip(args.sources, configs, strict=True):
        loaded = load_sample(config, tables)
        print(f"{name}: " + ", ".join(f"{t.table} {t.rows} rows" for t in loaded), file=out)
    return 0


def tables_of(data_sets: Sequence[str]) -> list[str]:
    unknown = sorted(set(data_sets) - set(DATA_SETS))
    if unknown:
        raise InvalidInput(f"unknown data sets {unknown}; known: {sorted(DATA_SETS)}")
    return [table for name in DATA_SETS if name in data_sets for table in DATA_SETS[name]]


def _source(settings: ExporterSettings, name: str) -> SourceConfig:
    config = settings.sources.get(name)
    if config is None:
        raise InvalidInput(f"no source {name!r} (EXPORTD_SOURCES__{name.upper()}__...)")
    if config.kind not in ("postgres", "mysql"):
        raise InvalidInput(f"source {name!r} is {config.kind}: load-sample fills postgres or mysql")
    return config


def load_sample(config: SourceConfig, tables: Sequence[str]) -> list[Loaded]:
    """Replace ``tables`` in the source's database with the sample's; return the row counts."""
    sample = duckdb.connect(":memory:")
    try:
        build_sample(sample)
        described = [describe(sample, name) for name in tables]
        if config.kind == "postgres":
            return _load_postgres(config, sample, described)
        return _load_mysql(config, sample, described)
    finally:
        sample.close()


def describe(sample: duckdb.DuckDBPyConnection, name: str) -> Table:
    columns = tuple(
        Column(column, data_type, nullable)
        for column, data_type, nullable in sample.execute(
            "SELECT column_name, data_type, is_nullable FROM duckdb_columns() "
            "WHERE table_name = ? ORDER BY column_index",
            [name],
        ).fetchall()
    )
    keys = sample.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'",
        [name],
    ).fetchall()
    if not columns:
        raise ValueError(f"the sample has no table {name}")
    # Quoted below all the same; the check keeps a name that needs quoting from going unnoticed.
    for identifier in (name, *(c.name for c in columns)):
        if not _IDENTIFIER.match(identifier):
            raise ValueError(f"sample identifier {identifier!r} is not plain lower case")
    return Table(name, columns, tuple(keys[0][0]) if keys else ())


def rows_of(sample: duckdb.DuckDBPyConnection, table: Table) -> Iterator[list[tuple[Any, ...]]]:
    """The table's rows in batches, in key order. Read through Arrow: DuckDB's own row fetch
    needs pytz for time-zoned timestamps, Arrow hands them over as zoneinfo datetimes."""
    order = ", ".join(f'"{c}"' for c in table.primary_key) or "ALL"
    reader = sample.execute(f'SELECT * FROM "{table.name}" ORDER BY {order}').to_arrow_reader(
        BATCH_ROWS
    )
    for batch in reader:
        yield list(zip(*(column.to_pylist() for column in batch.columns), strict=True))


def _column_defs(table: Table, dialect: Dialect, quote: str) -> str:
    defs = [
        f"{quote}{c.name}{quote} {c.sql_type(dialect)}"
        + ("" if c.nullable else " NOT NULL")
        # MySQL would give a NOT NULL-less first TIMESTAMP an automatic default and ON UPDATE.
        + (" NULL" if c.nullable and dialect == Dialect.MYSQL else "")
        for c in table.columns
    ]
    if table.primary_key:
        keys = ", ".join(f"{quote}{name}{quote}" for name in table.primary_key)
        defs.append(f"PRIMARY KEY ({keys})")
    return ", ".join(defs)


def _load_postgres(
    config: SourceConfig, sample: duckdb.DuckDBPyConnection, tables: list[Table]
) -> list[Loaded]:
    import psycopg

    from exportd.exporter.sources.postgres import classify, connect_failure, connection_arguments

    try:
        connection = psycopg.connect(**connection_arguments(config))
    except psycopg.Error as exc:
        raise connect_failure(exc) from exc
    loaded: list[Loaded] = []
    try:
        with connection, connection.transaction(), connection.cursor() as cursor:
            for table in tables:
                defs = _column_defs(table, Dialect.POSTGRES, '"')
                grants = _grants_of(cursor, table.name)
                cursor.execute(f'DROP TABLE IF EXISTS "{table.name}"')
                cursor.execute(f'CREATE TABLE "{table.name}" ({defs})')
                for grant in grants:
                    cursor.execute(grant)
                names = ", ".join(f'"{c.name}"' for c in table.columns)
                rows = 0
                with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                    for batch in rows_of(sample, table):
                        for row in batch:
                            copy.write_row(row)
                        rows += len(batch)
                loaded.append(Loaded(table.name, rows))
    except psycopg.Error as exc:
        raise classify(exc) from exc
    return loaded


def _grants_of(cursor: psycopg.Cursor[Any], table: str) -> list[sql.Composed]:
    """GRANTs giving others what they may do with the existing ``table``, to repeat on its
    replacement: a role that could read the sample before a load can read it after. (MySQL
    needs none of this: its table privileges outlive a DROP TABLE.)"""
    from psycopg import sql

    cursor.execute(
        "SELECT r.rolname, a.privilege_type, a.is_grantable "
        "FROM pg_class AS c CROSS JOIN LATERAL aclexplode(c.relacl) AS a "
        "LEFT JOIN pg_roles AS r ON r.oid = a.grantee "
        "WHERE c.oid = to_regclass(%s) AND a.grantee <> c.relowner",
        [f'"{table}"'],
    )
    return [
        sql.SQL("GRANT {} ON {} TO {}{}").format(
            sql.SQL(privilege),  # a keyword PostgreSQL itself reported (SELECT, INSERT, ...)
            sql.Identifier(table),
            sql.SQL("PUBLIC") if role is None else sql.Identifier(role),
            sql.SQL(" WITH GRANT OPTION" if grantable else ""),
        )
        for role, privilege, grantable in cursor.fetchall()
    ]


def _load_mysql(
    config: SourceConfig, sample: duckdb.DuckDBPyConnection, tables: list[Table]
) -> list[Loaded]:
    import pymysql

    from exportd.exporter.sources.mysql import classify, connection_arguments, open_connection

    connection = open_connection(connection_arguments(config))
    loaded: list[Loaded] = []
    try:
        with connection.cursor() as cursor:
            # Timestamps go in as UTC; strict mode refuses a value that does not fit its column.
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
            for table in tables:
                defs = _column_defs(table, Dialect.MYSQL, "`")
                cursor.execute(f"DROP TABLE IF EXISTS `{table.name}`")
                # utf8mb4: the notes hold 4-byte characters (an emoji).
                cursor.execute(
                    f"CREATE TABLE `{table.name}` ({defs}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                )
                names = ", ".join(f"`{c.name}`" for c in table.columns)
                insert = (
                    f"INSERT INTO `{table.name}` ({names}) "
                    f"VALUES ({', '.join(['%s'] * len(table.columns))})"
                )
                rows = 0
                connection.begin()  # one commit per table, not one per batch
                for batch in rows_of(sample, table):
                    cursor.executemany(insert, [_mysql_row(row) for row in batch])
                    rows += len(batch)
                connection.commit()
                loaded.append(Loaded(table.name, rows))
    except pymysql.Error as exc:
        raise classify(exc) from exc
    finally:
        connection.close()
    return loaded


def _mysql_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Aware datetimes as naive UTC: the session zone is UTC and MySQL literals carry none."""
    return tuple(
        value.astimezone(UTC).replace(tzinfo=None) if isinstance(value, datetime) else value
        for value in row
    )
