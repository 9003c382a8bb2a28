"""Connection and authentication failures become the documented transient or permanent errors.

Transient (exit code 75, a retry may help): nothing listens on the port, the server refuses more
connections. Permanent (exit code 3): the server rejects who we are (wrong password, a role that
may not log in, a role that does not exist), the database does not exist, the source is
misconfigured.

This machine's PostgreSQL trusts every TCP connection from 127.0.0.1 (``pg_hba.conf``), so it
accepts any password and a wrong-password failure cannot happen there; what the server does
reject (a NOLOGIN role, an unknown role) is tested instead, and the wrong password against
MariaDB, which has real password accounts. Server configuration files are not changed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from exportd.contract.errors import ExitCode, ExportdError
from exportd.exporter.sources import QueryOptions, open_source
from exportd.settings import SourceConfig
from tests.integration.dbfixtures import closed_port, mysql_connect, pg_connect, pg_rows

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Accounts:
    """Server accounts made for this module's tests, dropped afterwards."""

    pg_nologin: str
    pg_no_slots: str
    mysql_user: str
    mysql_password: str
    mysql_one_slot: str


@pytest.fixture(scope="module")
def accounts() -> Iterator[Accounts]:
    tag = secrets.token_hex(4)
    made = Accounts(
        pg_nologin=f"exportd_t_{tag}_nologin",
        pg_no_slots=f"exportd_t_{tag}_noslots",
        mysql_user=f"exportd_t_{tag}_reader",
        mysql_password=secrets.token_urlsafe(12),
        mysql_one_slot=f"exportd_t_{tag}_oneslot",
    )
    with pg_connect() as conn:
        conn.execute(f"CREATE ROLE {made.pg_nologin} NOLOGIN")
        conn.execute(f"CREATE ROLE {made.pg_no_slots} LOGIN CONNECTION LIMIT 0")
    my = mysql_connect()
    try:
        with my.cursor() as cursor:
            cursor.execute(
                f"CREATE USER '{made.mysql_user}'@'%%' IDENTIFIED BY %s", [made.mysql_password]
            )
            cursor.execute(f"CREATE USER '{made.mysql_one_slot}'@'%' WITH MAX_USER_CONNECTIONS 1")
        yield made
    finally:
        with my.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{made.mysql_user}'@'%'")
            cursor.execute(f"DROP USER IF EXISTS '{made.mysql_one_slot}'@'%'")
        my.close()
        with pg_connect() as conn:
            conn.execute(f"DROP ROLE IF EXISTS {made.pg_nologin}")
            conn.execute(f"DROP ROLE IF EXISTS {made.pg_no_slots}")


def failure_of(config: SourceConfig) -> ExportdError:
    """Open the source and run a trivial query; return the error it raised."""
    with pytest.raises(ExportdError) as raised, open_source(config) as source:
        list(source.stream("SELECT 1 AS one", {}, QueryOptions()))
    return raised.value


def assert_transient(error: ExportdError, reason: str) -> None:
    assert (error.reason, error.exit_code) == (reason, ExitCode.TRANSIENT), error.message


def assert_permanent(error: ExportdError, reason: str) -> None:
    assert (error.reason, error.exit_code) == (reason, ExitCode.PERMANENT), error.message


def pg(dsn: str, **extra: object) -> SourceConfig:
    return SourceConfig.model_validate({"kind": "postgres", "dsn": dsn, **extra})


def mysql(dsn: str, **extra: object) -> SourceConfig:
    return SourceConfig.model_validate({"kind": "mysql", "dsn": dsn, **extra})


def test_postgres_unreachable_port_is_transient() -> None:
    """Connection refused on 127.0.0.1 -> TransientFailure SourceUnavailable (exit 75)."""
    error = failure_of(pg(f"host=127.0.0.1 port={closed_port()} user=postgres dbname=test"))
    assert_transient(error, "SourceUnavailable")
    assert "refused" in error.message


def test_postgres_server_full_for_the_role_is_transient(accounts: Accounts) -> None:
    """A role with CONNECTION LIMIT 0 gets "too many connections" (53300): transient."""
    error = failure_of(pg(f"host=127.0.0.1 user={accounts.pg_no_slots} dbname=test"))
    assert_transient(error, "SourceUnavailable")
    assert "too many connections" in error.message


def test_postgres_here_trusts_loopback_so_a_password_cannot_be_wrong() -> None:
    """Documents the server setup the next tests depend on: pg_hba says trust for 127.0.0.1."""
    rules = pg_rows("SELECT type, address, auth_method FROM pg_hba_file_rules WHERE type = 'host'")
    assert rules == [("host", "127.0.0.1", "trust")]


def test_postgres_role_without_login_is_permanent(accounts: Accounts) -> None:
    """The server rejects a NOLOGIN role at authentication (28000): permanent, exit 3."""
    error = failure_of(pg(f"host=127.0.0.1 user={accounts.pg_nologin} dbname=test"))
    assert_permanent(error, "SourceAuthenticationFailed")
    assert "not permitted to log in" in error.message


def test_postgres_unknown_role_is_permanent() -> None:
    error = failure_of(
        pg(f"host=127.0.0.1 user=exportd_no_such_{secrets.token_hex(3)} dbname=test")
    )
    assert_permanent(error, "SourceAuthenticationFailed")


def test_postgres_missing_database_is_permanent() -> None:
    error = failure_of(pg(f"host=127.0.0.1 user=postgres dbname=exportd_no_{secrets.token_hex(3)}"))
    assert_permanent(error, "SourceDatabaseMissing")


def test_postgres_bad_dsn_or_missing_password_file_is_a_permanent_config_error(
    tmp_path: Path,
) -> None:
    assert_permanent(failure_of(pg("host=127.0.0.1 nonsense")), "SourceConfigInvalid")
    missing = pg("host=127.0.0.1 user=postgres dbname=test", password_file=tmp_path / "none")
    assert_permanent(failure_of(missing), "SourceConfigInvalid")


def test_mysql_unreachable_port_is_transient() -> None:
    error = failure_of(mysql(f"mysql://root@127.0.0.1:{closed_port()}/test"))
    assert_transient(error, "SourceUnavailable")
    assert "2003" in error.message


def test_mysql_wrong_password_is_permanent_and_the_password_file_is_used(
    accounts: Accounts, tmp_path: Path
) -> None:
    """The password comes from ``password_file`` (a mounted secret) and overrides the DSN's:
    the right one reads, a wrong one is refused (1045) -> SourceAuthenticationFailed, exit 3."""
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text(accounts.mysql_password + "\n", encoding="utf-8")
    wrong.write_text("not-" + accounts.mysql_password, encoding="utf-8")
    dsn = f"mysql://{accounts.mysql_user}:dsn-password-is-overridden@127.0.0.1:3306/"
    with open_source(mysql(dsn, password_file=right)) as source:
        batches = list(source.stream("SELECT CURRENT_USER() AS who", {}, QueryOptions()))
    assert pa.Table.from_batches(batches).column("who").to_pylist() == [f"{accounts.mysql_user}@%"]
    error = failure_of(mysql(dsn, password_file=wrong))
    assert_permanent(error, "SourceAuthenticationFailed")
    assert "1045" in error.message
    assert accounts.mysql_password not in error.message


def test_mysql_unknown_database_is_permanent() -> None:
    error = failure_of(mysql(f"mysql://root@127.0.0.1:3306/exportd_no_{secrets.token_hex(3)}"))
    assert_permanent(error, "SourceDatabaseMissing")


def test_mysql_user_over_its_connection_limit_is_transient(accounts: Accounts) -> None:
    """A user allowed one connection, already using it, is refused (1226): transient."""
    holder = mysql_connect(user=accounts.mysql_one_slot, database=None)
    try:
        error = failure_of(mysql(f"mysql://{accounts.mysql_one_slot}@127.0.0.1:3306/"))
    finally:
        holder.close()
    assert_transient(error, "SourceUnavailable")
    assert "1226" in error.message


def test_mysql_bad_dsn_is_a_permanent_config_error() -> None:
    assert_permanent(failure_of(mysql("postgres://root@127.0.0.1/test")), "SourceConfigInvalid")
    assert_permanent(
        failure_of(mysql("mysql://root@127.0.0.1:3306/test?init_command=DROP")),
        "SourceConfigInvalid",
    )
