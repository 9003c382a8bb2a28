"""Request ids, request metrics, one access log line per request, and ``GET /metrics``.

Why a pure ASGI middleware (not ``BaseHTTPMiddleware``): it must see every answer, including the
401 that the bearer middleware sends before routing and the downloads streamed in chunks, and it
must not buffer bodies. It is the outermost layer, so its timing covers everything.

- Request id: a valid incoming ``X-Request-ID`` (a proxy's or the client's) is kept, otherwise a
  new one is made; either way it is in the context of every log line of the request and in the
  ``X-Request-ID`` header of the answer.
- Metrics are labelled by the route *template* (``/v1/exports/{export_id}``), never the path, so
  ids do not become label values; unknown paths share the label ``unmatched``.
- Refusals: a 4xx problem answered to a request that creates an export (``POST /export``,
  ``POST /v1/exports``) counts in ``exportd_export_refusals_total`` by the problem's ``reason``
  (InsufficientCredits, RateLimited, InvalidInput, Unauthenticated, ...), read from the small
  problem body as it passes.
- The access log line has method, route, path (never the query string: download links carry
  their signature there), status and duration; probes and scrapes log at DEBUG unless they fail.

:func:`operations` runs what lives beside the API while it serves: the readiness self-check
(:mod:`exportd.api.probes`) and, in embedded mode, the hourly housekeeping
(:mod:`exportd.ops.housekeeping`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exportd.api import probes
from exportd.api.auth import PRINCIPAL_SCOPE_KEY
from exportd.api.context import EXPORTS_ROUTE, ApiContext
from exportd.api.problems import PROBLEM_MEDIA_TYPE
from exportd.ops import logs, metrics
from exportd.ops.housekeeping import Housekeeper, exporter_alive, run_periodically
from exportd.security.tokens import Principal

log = logging.getLogger("exportd.api.access")
REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
UNMATCHED_ROUTE = "unmatched"
EXPORT_CREATING = frozenset({("POST", "/export"), ("POST", EXPORTS_ROUTE)})
MAX_PROBLEM_BYTES = 64 * 1024
QUIET_ROUTES = frozenset({"/livez", "/readyz", "/metrics"})  # polled all day long

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


def request_id_from(headers: Headers) -> str:
    incoming = headers.get(REQUEST_ID_HEADER)
    if incoming and _VALID_REQUEST_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's path template; for answers given before routing (401), the template
    the path would have matched."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    state = getattr(app, "state", None)
    patterns = getattr(state, "route_patterns", None)
    if patterns is None:
        routes = getattr(getattr(app, "router", None), "routes", ())
        patterns = [(template, compile_path(template)[0]) for template in _templates(routes, "")]
        if state is not None:
            state.route_patterns = patterns  # routes are fixed once the app serves
    for template, regex in patterns:
        if regex.match(scope["path"]):
            return str(template)
    return UNMATCHED_ROUTE


def _templates(routes: Iterable[Any], prefix: str) -> Iterator[str]:
    """Every route's full path template, through included routers (FastAPI wraps those)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            nested = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            yield from _templates(inner.routes, prefix + nested)
        elif isinstance(getattr(route, "path", None), str):
            yield prefix + route.path


class _Answer:
    """What the middleware learns about the response as it is sent."""

    def __init__(self) -> None:
        self.status = 500
        self.problem = False
        self.body = bytearray()

    def problem_reason(self) -> str:
        try:
            reason = json.loads(bytes(self.body)).get("reason")
        except (ValueError, AttributeError):
            return "Unknown"
        return reason if isinstance(reason, str) and reason.isidentifier() else "Unknown"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        answer = _Answer()
        watch_problem = (scope["method"], scope["path"]) in EXPORT_CREATING

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                answer.problem = PROBLEM_MEDIA_TYPE in headers.get("content-type", "")
            elif (
                message["type"] == "http.response.body"
                and watch_problem
                and answer.problem
                and len(answer.body) < MAX_PROBLEM_BYTES
            ):
                answer.body += message.get("body", b"")
            await send(message)

        started = time.perf_counter()
        metrics.HTTP_IN_FLIGHT.inc()
        try:
            with logs.log_context(request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            self._record(scope, answer, time.perf_counter() - started, request_id)

    def _record(self, scope: Scope, answer: _Answer, seconds: float, request_id: str) -> None:
        route = route_template(scope)
        labels = {"method": scope["method"], "route": route, "status": str(answer.status)}
        metrics.HTTP_REQUESTS.labels(**labels).inc()
        metrics.HTTP_DURATION.labels(**labels).observe(seconds)
        creating = (scope["method"], route) in EXPORT_CREATING
        if creating and 400 <= answer.status < 500:
            metrics.REFUSALS.labels(reason=answer.problem_reason()).inc()
        principal = scope.get(PRINCIPAL_SCOPE_KEY)
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": route,
            "path": scope["path"],
            "status": answer.status,
            "duration_ms": round(seconds * 1000, 1),
        }
        quiet = route in QUIET_ROUTES and answer.status < 400
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %s",
            scope["method"],
            scope["path"],
            answer.status,
            extra={
                "fields": fields,
                "request_id": request_id,
                "user": principal.sub if isinstance(principal, Principal) else None,
            },
        )


class UserContextMiddleware:
    """Puts the authenticated user's ``sub`` in the log context; sits inside the bearer
    middleware, which has verified the token by the time this runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get(PRINCIPAL_SCOPE_KEY)
        if scope["type"] != "http" or not isinstance(principal, Principal):
            await self.app(scope, receive, send)
            return
        with logs.log_context(user=principal.sub):
            await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def operations(app: FastAPI, context: ApiContext) -> AsyncIterator[None]:
    """What runs beside the API while it serves: the readiness self-check, and in embedded
    mode the hourly housekeeping task. Started after the backend, stopped before it."""
    protection = getattr(app.state, "protection", None)  # its store: credits, idempotency
    monitor = probes.monitor_for(context, getattr(protection, "store", None))
    app.state.readiness = monitor
    await monitor.start()
    housekeeper = embedded_housekeeper(context)
    task = None
    if housekeeper is not None:
        task = asyncio.create_task(
            run_periodically(housekeeper, context.settings.housekeeping_interval_seconds),
            name="exportd-housekeeping",
        )
    try:
        yield
    finally:
        await monitor.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def embedded_housekeeper(context: ApiContext) -> Housekeeper | None:
    """Housekeeping over the embedded backend's store; the runner says which exports run."""
    from exportd.api.backends.embedded import EmbeddedBackend

    backend = context.backend
    if not isinstance(backend, EmbeddedBackend):
        return None  # Kubernetes mode: the operator's timer does it (exportd.operator)
    runner = backend.runner
    return Housekeeper(
        context.settings,
        backend.store,
        backend.storage,
        is_live=lambda record: runner.is_running(record.id) or exporter_alive(record),
        on_change=backend.events.publish,
    )
