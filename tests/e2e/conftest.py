"""A real embedded server for end-to-end tests: ``exportd serve`` as a child process.

Each server listens on 127.0.0.1 on a free port, keeps its data in the test's tmp directory,
and reads the session's shared sample database. Its whole environment is given explicitly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from exportd.security.tokens import mint_token
from tests.integration.conftest import JWT_SECRET, write_test_catalog

EXPORTD = Path(sys.executable).parent / "exportd"
STARTUP_DEADLINE_SECONDS = 120
STOP_DEADLINE_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    data_dir: Path
    sample_db: Path
    settings_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    executable: Path = EXPORTD  # `exportd` of this venv, or of an image's venv
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.port}.log"

    def env(self) -> dict[str, str]:
        sources = {"sample": {"kind": "duckdb", "path": str(self.sample_db)}}
        return {
            "PATH": os.defpath,
            "HOME": str(self.data_dir),
            "LANG": "C.UTF-8",
            "EXPORTD_DATA_DIR": str(self.data_dir),
            "EXPORTD_HOST": "127.0.0.1",
            "EXPORTD_PORT": str(self.port),
            "EXPORTD_PUBLIC_URL": self.base_url,
            "EXPORTD_JWT_SECRET": JWT_SECRET,
            "EXPORTD_SOURCES": json.dumps(sources),
            "EXPORTD_CATALOG_PATH": str(write_test_catalog(self.data_dir)),
            "EXPORTD_LOG_LEVEL": "WARNING",
            "EXPORTD_SHUTDOWN_DRAIN_SECONDS": "0",  # a test that checks the drain sets it
            **self.settings_env,
        }

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.executable), "serve"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"exportd serve exited {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"exportd serve not ready in {STARTUP_DEADLINE_SECONDS} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def token(self, sub: str = "alice") -> str:
        return mint_token(sub, JWT_SECRET)

    def headers(self, sub: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub)}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=120, **kwargs)


@pytest.fixture
def make_server(tmp_path: Path, sample_db: Path) -> Iterator[Any]:
    """Start servers on ``tmp_path/data`` (or another dir); all are stopped at the end."""
    servers: list[Server] = []

    def make(data_dir: Path | None = None, **settings_env: str) -> Server:
        server = Server(data_dir or tmp_path / "data", sample_db, dict(settings_env))
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Any) -> Server:
    started: Server = make_server()
    return started
