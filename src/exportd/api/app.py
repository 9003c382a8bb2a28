"""The app factory: settings in, a FastAPI app out, with its backend started by the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from exportd import __version__
from exportd.api import observability, probes
from exportd.api.auth import BearerAuthMiddleware
from exportd.api.backends import backend_from_settings
from exportd.api.backends.base import ExportBackend
from exportd.api.bodylimit import BodyLimitMiddleware
from exportd.api.context import ApiContext
from exportd.api.head import HeadAsGetMiddleware
from exportd.api.observability import ObservabilityMiddleware, UserContextMiddleware, operations
from exportd.api.problems import install_problem_handlers
from exportd.api.protection import Protection, install_protection
from exportd.api.ratelimit import RateLimitMiddleware
from exportd.api.routes import (
    credits,
    events,
    exports,
    files,
    links,
    meta,
    outbox,
    page,
    schedules,
)
from exportd.api.scheduler import Scheduler
from exportd.contract.catalog import Catalog
from exportd.contract.spec import utc_now
from exportd.security.signing import UrlSigner
from exportd.security.tokens import TokenVerifier
from exportd.settings import ApiSettings
from exportd.storage.base import storage_from_settings
from exportd.store.base import Clock


def create_app(
    settings: ApiSettings | None = None,
    *,
    backend: ExportBackend | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    settings = settings or ApiSettings()
    catalog = Catalog.load(settings.resolved_catalog_path)
    context = ApiContext(
        settings=settings,
        catalog=catalog,
        backend=backend or backend_from_settings(settings, catalog),
        storage=storage_from_settings(settings),
        signer=UrlSigner(settings.secret("signing_key"), settings.public_url),
    )
    protection = Protection.build(settings, context.backend, clock)  # credits, keys, limits
    scheduler = Scheduler(context, protection, clock or utc_now)  # the /v1/schedules

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await context.backend.start()
        await protection.start()
        try:
            async with operations(_app, context), scheduler.running():
                yield  # operations: readiness self-check, housekeeping
        finally:
            await protection.stop()
            await context.backend.stop()

    app = FastAPI(
        title="exportd",
        version=__version__,
        summary="Predefined, parameterized exports to XLSX or CSV, delivered by signed link.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.exportd = context
    app.state.scheduler = scheduler
    install_problem_handlers(app)
    install_protection(app, protection)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimitMiddleware, limiter=protection.limiter)  # needs the user
    app.add_middleware(UserContextMiddleware)  # inside the bearer check: sees the user
    app.add_middleware(BearerAuthMiddleware, verifier=TokenVerifier.from_settings(settings))
    app.add_middleware(ObservabilityMiddleware)  # outermost: request id, metrics, access log
    app.add_middleware(HeadAsGetMiddleware)  # HEAD runs as GET everywhere, without the body
    # page first: it owns GET /, the web page.
    routers = (page, probes, observability, meta, exports, events, files, credits, links, outbox)
    for module in (*routers, schedules):
        app.include_router(module.router)
    return app
