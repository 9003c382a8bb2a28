"""The ``exportd`` command line, run as a real process: ``token``, ``run`` and serve's quickstart.

Each command gets an explicit environment whose data directory is the test's tmp directory.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import openpyxl
import pytest

from exportd.security.tokens import TokenVerifier
from exportd.settings import ApiSettings
from tests.e2e.conftest import EXPORTD

pytestmark = pytest.mark.e2e


def cli_env(data_dir: Path, sample_db: Path, **extra: str) -> dict[str, str]:
    sources = {"sample": {"kind": "duckdb", "path": str(sample_db)}}
    return {
        "PATH": os.defpath,
        "HOME": str(data_dir),
        "LANG": "C.UTF-8",
        "EXPORTD_DATA_DIR": str(data_dir),
        "EXPORTD_SOURCES": json.dumps(sources),
        **extra,
    }


def exportd(*args: str, env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXPORTD), *args], env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


def test_token_is_signed_with_the_secret_serve_verifies_with(tmp_path: Path) -> None:
    """A server's data directory holds its development secret (made here by the verifier serve
    builds); ``exportd token --sub alice`` with that data directory signs with it: the verifier
    accepts the token and names alice."""
    settings = ApiSettings(data_dir=tmp_path / "data")
    verifier = TokenVerifier.from_settings(settings)  # creates the secret, as serve's app does
    env = cli_env(tmp_path / "data", tmp_path / "unused.duckdb")
    done = exportd("token", "--sub", "alice", "--ttl", "600", env=env)
    assert done.returncode == 0, done.stderr
    principal = verifier.verify(done.stdout.strip())
    assert principal.sub == "alice"
    assert principal.claims["exp"] - principal.claims["iat"] == 600


def test_token_finds_the_data_directory_as_serve_does(tmp_path: Path) -> None:
    """With no EXPORTD_DATA_DIR both commands use ``./var`` of the folder they run in: a token
    minted in the server's folder is accepted; one asked for in another folder is refused with
    exit status 3 and a message naming that folder's data directory and the way out, and no
    secret (nor any ``var/``) is created there."""
    server_dir, elsewhere = tmp_path / "server", tmp_path / "elsewhere"
    server_dir.mkdir()
    elsewhere.mkdir()
    env = cli_env(tmp_path / "unused", tmp_path / "unused.duckdb")
    del env["EXPORTD_DATA_DIR"]
    verifier = TokenVerifier.from_settings(ApiSettings(data_dir=server_dir / "var"))
    minted = exportd("token", "--sub", "bob", env=env, cwd=server_dir)
    assert minted.returncode == 0, minted.stderr
    assert verifier.verify(minted.stdout.strip()).sub == "bob"
    refused = exportd("token", "--sub", "bob", env=env, cwd=elsewhere)
    assert refused.returncode == 3
    assert refused.stdout == ""
    assert f"no exportd server uses the data directory {elsewhere / 'var'}" in refused.stderr
    assert "EXPORTD_DATA_DIR" in refused.stderr
    assert not (elsewhere / "var").exists()


def test_run_writes_the_export_to_the_output_path(tmp_path: Path, sample_db: Path) -> None:
    """``exportd run userExport -v x=1 -v y=2 -o myexport.xlsx``: exit 0, prints the output
    path, and the XLSX holds the 40,000 users of tiers 1-2."""
    env = cli_env(tmp_path / "data", sample_db)
    output = tmp_path / "out" / "myexport.xlsx"
    done = exportd(
        "run", "userExport", "-v", "x=1", "-v", "y=2", "-o", str(output), env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(output)
    sheet = openpyxl.load_workbook(output, read_only=True)["Export"]
    rows = list(sheet.iter_rows(values_only=True))
    assert len(rows) == 40_001
    assert {row[rows[0].index("tier")] for row in rows[1:]} == {1, 2}


def test_run_refuses_bad_variables_with_exit_3(tmp_path: Path, sample_db: Path) -> None:
    """An out-of-range variable: exit code 3 (permanent), the field named on stderr, no file."""
    env = cli_env(tmp_path / "data", sample_db)
    output = tmp_path / "bad.csv"
    done = exportd("run", "userExport", "-v", "x=9", "-v", "y=2", "-o", str(output), env=env)
    assert done.returncode == 3
    assert "variables.x" in done.stderr
    assert not output.exists()


def test_run_draws_progress_on_a_terminal(tmp_path: Path, sample_db: Path) -> None:
    """With stderr on a terminal (a pty), ``run`` draws a progress line (rows, rows/s)."""
    env = cli_env(tmp_path / "data", sample_db, EXPORTD_BATCH_ROWS="5000")
    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            [str(EXPORTD), "run", "userExport", "-v", "x=1", "-v", "y=5", "-o", "all.csv"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=300,
        )
        os.close(slave)
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(master)
    assert done.returncode == 0
    assert b"rows/s" in drawn and b"\r" in drawn
    assert (tmp_path / "all.csv").exists()
