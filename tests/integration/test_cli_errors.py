"""``exportd run`` fails with one clean line: the reason and the documented exit code
(2 usage, 3 permanent, 75 transient), never a Python traceback unless ``--debug`` asks for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exportd.cli import as_exportd_error
from exportd.contract.errors import ExitCode
from tests.conftest import exporter_env

pytestmark = pytest.mark.integration


def exportd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exportd.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("case", "extra_env", "args", "code", "reason"),
    [
        ("bad variable", {}, ["-v", "x=1", "-v", "y=zz"], ExitCode.PERMANENT, "InvalidInput"),
        ("bad setting", {"EXPORTD_BATCH_ROWS": "abc"}, ["-v", "x=1", "-v", "y=2"],
         ExitCode.PERMANENT, "InvalidConfiguration"),
        ("unwritable output", {}, ["-v", "x=1", "-v", "y=2", "-o", "/proc/none/x.csv"],
         ExitCode.TRANSIENT, "FileError"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_reason_and_exit_code(
    tmp_path: Path,
    sample_db: Path,
    case: str,
    extra_env: dict[str, str],
    args: list[str],
    code: int,
    reason: str,
) -> None:
    """A bad variable, an invalid setting and an output directory that cannot be created:
    stderr is exactly one line ``exportd: ... (<Reason>)``, the exit code is the documented
    one, and no traceback appears; with ``--debug`` the traceback is there too."""
    env = exporter_env(tmp_path / "data", sample_db, **extra_env)
    done = exportd(env, "run", "userExport", *args)
    lines = done.stderr.splitlines()
    assert done.returncode == code, (case, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("exportd: "), (case, done.stderr)
    assert lines[0].endswith(f"({reason})")
    assert "Traceback" not in done.stderr
    if code != ExitCode.PERMANENT or case == "bad setting":
        debug = exportd(env, "--debug", "run", "userExport", *args)
        assert debug.returncode == code
        assert "Traceback (most recent call last)" in debug.stderr
        assert debug.stderr.splitlines()[-1] == lines[0]


def test_an_unexpected_exception_is_an_internal_error_exit_75() -> None:
    """Anything outside the taxonomy (here a real ZeroDivisionError) becomes the one-line
    ``internal error`` with exit 75 (retried, like the exporter's InternalError), pointing to
    ``--debug``."""
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError as exc:
        error = as_exportd_error(exc)
    assert error.exit_code == ExitCode.TRANSIENT and error.reason == "InternalError"
    assert error.message.startswith("internal error: ZeroDivisionError: division by zero")
    assert "--debug" in error.message
