"""Fixtures for API tests against a started app (in-process ASGI, real backend, real exporter
children).

``api`` is parametrized over backends through ``BACKEND_FACTORIES``: the same tests run against
every backend registered there (the Kubernetes backend adds itself next to ``embedded``). Each
test gets its own data directory; the sample DuckDB file is the session's shared one
(``sample_db`` from tests/conftest.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from exportd.api import create_app
from exportd.api.backends.embedded import EmbeddedBackend
from exportd.contract.catalog import Catalog
from exportd.security.tokens import mint_token
from exportd.settings import ApiSettings, SourceConfig
from tests.k8s.api import count_export_requests, kubernetes_app

JWT_SECRET = "integration-test-secret-of-sufficient-length"
SHIPPED_CATALOG = Path(__file__).parents[2] / "src" / "exportd" / "data" / "catalog.yaml"
# An export that runs until stopped: it streams a practically endless range as CSV rows, so a
# test can observe it Running (with growing progress) and cancel it or kill its API.
ENDLESS_TYPE = {
    "title": "Endless rows (tests only)",
    "source": "sample",
    "query": "SELECT range AS i, 'row ' || range AS label FROM range(:n)",
    "variables": {"n": {"type": "integer", "required": True, "min": 1}},
    "metadata": False,
}
# Fails for good: the query names a table that does not exist (exit 3, not retried).
BROKEN_TYPE = {"source": "sample", "query": "SELECT * FROM no_such_table", "variables": {}}
# Fails transiently: its DuckDB file does not exist (exit 75, retried up to max_attempts).
MISSING_SOURCE_TYPE = {"source": "missing", "query": "SELECT 1 AS one", "variables": {}}
MENU_BODY = {
    "type": "menuCategoriesByMuscle",
    "fileName": "menus.csv",
    "variables": {"a": "muscle1", "b": "muscle2"},
}
ENDLESS_BODY = {
    "type": "endlessRows",
    "fileName": "endless.csv",
    "variables": {"n": 10**12},
}
SEED_BODY = {
    "type": "userExport",
    "returnType": "url",
    "fileName": "myexport.xlsx",
    "variables": {"x": 1, "y": 2},
}


def write_test_catalog(directory: Path) -> Path:
    """The shipped catalog plus the test-only types above."""
    catalog = yaml.safe_load(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    catalog["types"]["endlessRows"] = ENDLESS_TYPE
    catalog["types"]["brokenQuery"] = BROKEN_TYPE
    catalog["types"]["missingSource"] = MISSING_SOURCE_TYPE
    path = directory / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog), encoding="utf-8")
    Catalog.load(path)  # fail here, not in the app, if the test catalog is wrong
    return path


def make_settings(data_dir: Path, sample_db: Path, **overrides: Any) -> ApiSettings:
    data_dir.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "jwt_secret": JWT_SECRET,
        "signing_key": "integration-test-signing-key",
        "sources": {
            "sample": SourceConfig(kind="duckdb", path=sample_db),
            "missing": SourceConfig(kind="duckdb", path=data_dir / "absent" / "none.duckdb"),
        },
        "catalog_path": write_test_catalog(data_dir),
        "public_url": "http://testserver",
        "sync_wait_seconds": 60,
        "max_running_exports": 2,
        "cancel_grace_seconds": 5,
        "retry_backoff_seconds": 0.2,
    }
    values.update(overrides)
    return ApiSettings(**values)


def token_for(sub: str, **kwargs: Any) -> str:
    return mint_token(sub, JWT_SECRET, **kwargs)


def auth(sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(sub)}"}


def count_export_records(settings: ApiSettings) -> int:
    """Records in the embedded state store, read straight from its file."""
    if not settings.state_db_path.exists():
        return 0
    with sqlite3.connect(settings.state_db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "exports" not in tables:
            return 0
        return int(conn.execute("SELECT COUNT(*) FROM exports").fetchone()[0])


@dataclass
class Api:
    """A started app and a client talking to it in-process."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: ApiSettings
    backend_kind: str

    def records(self) -> int:
        """How many exports the backend has recorded, read from its own storage."""
        return RECORD_COUNTERS[self.backend_kind](self)


BackendFactory = Callable[[ApiSettings], FastAPI]


def _embedded(settings: ApiSettings) -> FastAPI:
    catalog = Catalog.load(settings.resolved_catalog_path)
    return create_app(settings, backend=EmbeddedBackend(settings, catalog))


# One entry per backend: how to build an app on it, and how to count what it recorded. The
# Kubernetes backend runs on a test cluster of its own (emulator, kubelet, operator: tests/k8s).
BACKEND_FACTORIES: dict[str, BackendFactory] = {
    "embedded": _embedded,
    "kubernetes": kubernetes_app,
}
RECORD_COUNTERS: dict[str, Callable[[Api], int]] = {
    "embedded": lambda api: count_export_records(api.settings),
    "kubernetes": lambda api: count_export_requests(api.app),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def api_settings(tmp_path: Path, sample_db: Path) -> ApiSettings:
    return make_settings(tmp_path / "data", sample_db)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the app's settings."""
    return {}


@pytest.fixture
async def api(
    tmp_path: Path, sample_db: Path, backend_kind: str, settings_overrides: dict[str, Any]
) -> AsyncIterator[Api]:
    settings = make_settings(tmp_path / "data", sample_db, **settings_overrides)
    app = BACKEND_FACTORIES[backend_kind](settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield Api(app, client, settings, backend_kind)


@pytest.fixture
def seed_body() -> Iterator[dict[str, Any]]:
    yield dict(SEED_BODY)


async def wait_for(
    api: Api,
    export_id: str,
    holds: Callable[[dict[str, Any]], bool],
    *,
    owner: str = "alice",
    deadline_seconds: float = 120,
) -> dict[str, Any]:
    """Re-read the export until ``holds`` is true of it; fail (not hang) past a generous bound."""
    import asyncio
    import time

    give_up = time.monotonic() + deadline_seconds
    while True:
        response = await api.client.get(f"/v1/exports/{export_id}", headers=auth(owner))
        shown: dict[str, Any] = response.json()
        if holds(shown):
            return shown
        if shown.get("phase") in {"Succeeded", "Failed", "Cancelled"} or time.monotonic() > give_up:
            raise AssertionError(f"export {export_id} never reached the expected state: {shown}")
        await asyncio.sleep(0.1)
