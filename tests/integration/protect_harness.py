"""A started embedded app for the protection tests, with the clock and the state store chosen by
the test (SQLite under tmp_path, or a throwaway PostgreSQL schema), talking in-process ASGI.

The clock is shared by the API (credit accrual, idempotency expiry) and the store (refunds), so a
test moves time across midnight by setting it, never by sleeping. It starts in 2099: the app's
housekeeping task runs on the real clock, and must not see the test's idempotency keys as long
expired.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from exportd.api import create_app
from exportd.api.backends.embedded import EmbeddedBackend
from exportd.contract.catalog import Catalog
from exportd.security.credits import CreditPolicy
from exportd.settings import ApiSettings
from exportd.store.base import StateStore
from exportd.store.postgres import PostgresStateStore
from exportd.store.sqlite import SqliteStateStore
from tests.integration.conftest import auth, make_settings
from tests.integration.pgstate import throwaway_schema


class FakeClock:
    """Wall-clock time that only moves when the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    settings: ApiSettings
    store: StateStore
    clock: FakeClock

    async def balance(self, sub: str) -> int:
        response = await self.client.get("/v1/credits", headers=auth(sub))
        assert response.status_code == 200, response.text
        balance: int = response.json()["balance"]
        return balance

    async def exports_of(self, sub: str) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/exports?limit=100", headers=auth(sub))
        items: list[dict[str, Any]] = response.json()["items"]
        return items


def _store(kind: str, settings: ApiSettings, clock: FakeClock, dsn: str | None) -> StateStore:
    policy = CreditPolicy.from_settings(settings)
    if kind == "postgres":
        assert dsn is not None
        return PostgresStateStore(dsn, credit_policy=policy, clock=clock)
    return SqliteStateStore(settings.state_db_path, credit_policy=policy, clock=clock)


@asynccontextmanager
async def started_api(
    tmp_path: Path,
    sample_db: Path,
    *,
    store_kind: str = "sqlite",
    now: datetime | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """An app on the embedded backend; ``overrides`` are ApiSettings fields."""
    clock = FakeClock(now or datetime(2099, 6, 1, 12, 0, tzinfo=UTC))
    settings = make_settings(tmp_path / "data", sample_db, **overrides)
    async with AsyncExitStack() as stack:
        dsn = stack.enter_context(throwaway_schema()) if store_kind == "postgres" else None
        store = _store(store_kind, settings, clock, dsn)
        catalog = Catalog.load(settings.resolved_catalog_path)
        backend = EmbeddedBackend(settings, catalog, store=store)
        app = create_app(settings, backend=backend, clock=clock)
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120)
        )
        yield Harness(app, client, settings, store, clock)
