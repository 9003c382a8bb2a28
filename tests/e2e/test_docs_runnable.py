"""Every shell block the README and the docs mark as runnable really runs, in embedded mode.

A block fenced as ```` ```sh runnable ```` (or ``bash runnable``) in README.md or any docs/*.md
file is extracted and run with ``bash -euo pipefail`` against a real ``exportd serve``: a fresh
data directory under tmp, a free loopback port. The blocks get the convention the docs state at
their top: ``$EXPORTD_URL`` is the server's base URL and ``$TOKEN`` a bearer token minted by
``exportd token`` for that server; ``$EXPORTD_DATA_DIR`` is the server's data directory. Each
block gets a token of its own user, so the credits one block spends (5 per new user) never make
another block fail. A block passes when it exits 0.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXPORTD = BIN / "exportd"
FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
RUNNABLE_LANGUAGES = {"sh", "bash", "shell"}
SERVER_START_LIMIT_SECONDS = 120
BLOCK_LIMIT_SECONDS = 120


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def runnable_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file whose info string is ``sh runnable`` or alike."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = FENCE_OPEN.match(lines[index])
        if match is None:
            index += 1
            continue
        fence, words = match.group("fence"), match.group("info").split()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if words and words[0] in RUNNABLE_LANGUAGES and "runnable" in words[1:]:
            blocks.append(Block(path, index + 1, "\n".join(lines[index + 1 : end]) + "\n"))
        index = end + 1
    return blocks


def documents() -> list[Path]:
    readme = [REPO / "README.md"] if (REPO / "README.md").exists() else []
    return readme + sorted((REPO / "docs").rglob("*.md"))


ALL_BLOCKS = [block for doc in documents() for block in runnable_blocks(doc)]


def test_block_extraction_takes_only_blocks_marked_runnable(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n```sh\nnot runnable\n```\n"
        "```sh runnable\necho one\n```\n"
        "````bash runnable\necho ``` inside\n````\n"
        "```mermaid\nflowchart LR\n```\n"
        "```python runnable\nprint(1)\n```\n",
        encoding="utf-8",
    )
    found = runnable_blocks(doc)
    assert [(b.line, b.code) for b in found] == [(5, "echo one\n"), (8, "echo ``` inside\n")]


def test_the_docs_carry_runnable_blocks_and_state_the_convention() -> None:
    """Guards against a silent pass: the docs that promise runnable examples have them, and
    every file with runnable blocks explains $EXPORTD_URL and $TOKEN near its top."""
    files_with_blocks = {block.path.relative_to(REPO).as_posix() for block in ALL_BLOCKS}
    assert {
        "docs/architecture.md",
        "docs/design-answers.md",
        "docs/operations.md",
        "README.md",
    } <= files_with_blocks
    for name in files_with_blocks:
        head = "\n".join((REPO / name).read_text(encoding="utf-8").splitlines()[:15])
        assert "$EXPORTD_URL" in head and "$TOKEN" in head, name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_env(home: Path) -> dict[str, str]:
    """The machine's environment without any EXPORTD_* setting, venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EXPORTD_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(home)
    return env


@dataclass(frozen=True)
class Server:
    url: str
    data_dir: Path
    env: dict[str, str]

    def mint_token(self, subject: str) -> str:
        """A token from ``exportd token``, the command the docs tell readers to use."""
        done = subprocess.run(
            [str(EXPORTD), "token", "--sub", subject],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1].strip()


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exportd serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(f"{url}/v1/export-types", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"exportd serve did not answer on {url}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real embedded-mode server on a free loopback port, and a token for it."""
    root = tmp_path_factory.mktemp("docs-runnable")
    data_dir = root / "data"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _base_env(root) | {"EXPORTD_DATA_DIR": str(data_dir), "EXPORTD_PUBLIC_URL": url}
    log = root / "server.log"
    with log.open("wb") as log_handle:
        process = subprocess.Popen(
            [str(EXPORTD), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    try:
        _wait_until_serving(process, url, log)
        yield Server(url=url, data_dir=data_dir, env=env)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda block: block.name)
def test_runnable_block_succeeds_against_embedded_server(
    block: Block, server: Server, tmp_path: Path
) -> None:
    subject = "docs-" + re.sub(r"[^a-z0-9]+", "-", block.name.lower())
    env = server.env | {"EXPORTD_URL": server.url, "TOKEN": server.mint_token(subject)}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BLOCK_LIMIT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, (
        f"{block.name} exited {done.returncode}\n--- block\n{block.code}"
        f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    )
