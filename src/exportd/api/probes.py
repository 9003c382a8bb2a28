"""``/livez`` and ``/readyz``, answered from a cached, periodic self-check.

Why cached: kubelets, load balancers and monitors probe often, sometimes every second from
several places; a probe that queried the database each time would put load on it exactly when it
struggles. A background task checks every dependency every ``readiness_interval_seconds``, each
within ``readiness_timeout_seconds``, and the probe only reads the last result (and runs a check
itself only if the task has fallen far behind).

- ``/livez``: the process serves HTTP. No dependency is consulted: restarting the API does not
  fix a database outage, so liveness must not fail because of one.
- ``/readyz`` means "this replica can serve": the state database (embedded) or the Kubernetes
  API (kubernetes backend) answers through the backend, and a separate state store when the API
  holds one (credits, idempotency keys). 503 with the failing checks named. Redis (the limiter
  fails open without it), the storage and the SMTP server are checked too but only reported:
  one that fails is named under ``degraded`` in the body and in the metric
  ``exportd_dependency_degraded``, and the replica stays ready. Every replica shares those
  dependencies, so failing readiness for them would take every replica out of the Service at
  once without fixing anything.
- On SIGTERM (:meth:`ReadinessMonitor.drain`), ``/readyz`` answers 503 for the drain window
  before the listener closes, so load balancers stop sending new requests first.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from exportd.api.context import ApiContext, ContextDep
from exportd.api.models import Health
from exportd.contract.spec import utc_now
from exportd.ops import metrics
from exportd.settings import ApiSettings, Backend
from exportd.storage.base import Storage
from exportd.store.base import StateStore

log = logging.getLogger(__name__)
STORAGE_PROBE_KEY = "readyz/probe"
STALE_AFTER_INTERVALS = 3

router = APIRouter()
CheckFunction = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Check:
    name: str
    run: CheckFunction
    close: Callable[[], Awaitable[None]] | None = None
    required: bool = True  # False: a failure is reported as degraded, the replica stays ready


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)
    checked_at: datetime | None = None
    degraded: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ready" if self.ready else "not ready",
            "checks": self.checks,
            "degraded": self.degraded,
            "checkedAt": self.checked_at.isoformat() if self.checked_at else None,
        }


class ReadinessMonitor:
    """Runs the checks now and then; ``current()`` is what ``/readyz`` answers."""

    def __init__(self, checks: list[Check], interval: float, timeout: float) -> None:
        self.checks = checks
        self.interval = interval
        self.timeout = timeout
        self._last = Readiness(ready=False, checks={"selfCheck": "not run yet"})
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._stopping = False

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="exportd-readiness")

    def drain(self) -> None:
        """From here on ``/readyz`` answers 503 (SIGTERM: the drain window has begun)."""
        self._stopping = True
        self._last = Readiness(False, {"shutdown": "draining"}, utc_now())

    async def stop(self) -> None:
        """From here on the API reports not ready (it is shutting down)."""
        self._stopping = True
        self._last = Readiness(False, {"shutdown": "in progress"}, utc_now())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for running in self._inflight.values():
            running.cancel()
        for check in self.checks:
            if check.close is not None:
                with contextlib.suppress(Exception):
                    await check.close()

    async def current(self) -> Readiness:
        if self._stopping:
            return self._last
        checked_at = self._last.checked_at
        age = None if checked_at is None else (utc_now() - checked_at).total_seconds()
        if age is None or age > self.interval * STALE_AFTER_INTERVALS:
            await self.refresh()
        return self._last

    async def refresh(self) -> Readiness:
        async with self._lock:
            results = await asyncio.gather(*(self._run(check) for check in self.checks))
            pairs = list(zip(self.checks, results, strict=True))
            report = Readiness(
                ready=all(ok for check, (ok, _) in pairs if check.required),
                checks={check.name: text for check, (_, text) in pairs},
                checked_at=utc_now(),
                degraded=[check.name for check, (ok, _) in pairs if not ok and not check.required],
            )
            for check, (ok, _) in pairs:
                degraded = 0 if ok or check.required else 1
                metrics.DEPENDENCY_DEGRADED.labels(dependency=check.name).set(degraded)
            if not self._stopping:
                self._last = report
            return report

    async def _run(self, check: Check) -> tuple[bool, str]:
        running = self._inflight.get(check.name)
        if running is not None and not running.done():
            # A dependency that hangs must not collect one stuck call per period.
            ok, text = False, "the previous check has not answered yet"
        else:
            ok, text = await self._start(check)
        metrics.DEPENDENCY_UP.labels(dependency=check.name).set(1 if ok else 0)
        if not ok:
            log.warning("readiness check %s: %s", check.name, text)
        return ok, text

    async def _start(self, check: Check) -> tuple[bool, str]:
        task = asyncio.ensure_future(check.run())
        task.add_done_callback(_retrieve)
        self._inflight[check.name] = task
        try:
            ok = await asyncio.wait_for(asyncio.shield(task), self.timeout)
        except TimeoutError:
            return False, f"no answer within {self.timeout} s"
        except Exception as exc:  # a probe reports any failure; it never raises
            return False, f"failed: {type(exc).__name__}"
        return ok, "ok" if ok else "failed"

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()


def _retrieve(task: asyncio.Future[bool]) -> None:
    """A check that answers after its timeout: its outcome is dropped, without a warning."""
    if not task.cancelled():
        task.exception()


def readiness_checks(context: ApiContext, state_store: StateStore | None = None) -> list[Check]:
    """What ``/readyz`` depends on, for the backend and settings of this API. ``state_store``:
    a state database the API holds besides its backend (credits and idempotency keys in
    Kubernetes mode); the embedded backend's own store is checked by its ``ready()``."""
    settings = context.settings
    backend_name = "kubernetes" if settings.backend is Backend.KUBERNETES else "state_db"
    checks = [Check(backend_name, context.backend.ready)]
    if state_store is not None and backend_name != "state_db":
        checks.append(Check("state_db", state_store.ping))
    if getattr(settings, "redis_url", None) is not None:
        checks.append(_redis_check(settings))
    checks.append(Check("storage", _storage_check(context.storage), required=False))
    if settings.smtp.host is not None:
        checks.append(
            Check("smtp", _smtp_check(settings.smtp.host, settings.smtp.port), required=False)
        )
    return checks


def _smtp_check(host: str, port: int) -> CheckFunction:
    """The SMTP server accepts a TCP connection (no login: probes must not spam the log)."""

    async def check() -> bool:
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    return check


def _storage_check(storage: Storage) -> CheckFunction:
    """Local storage: its root is a writable directory. Object stores: a HEAD answers."""
    from exportd.storage.local import LocalStorage

    def probe() -> bool:
        if isinstance(storage, LocalStorage):
            storage.root.mkdir(parents=True, exist_ok=True)
            return os.access(storage.root, os.W_OK | os.X_OK)
        storage.exists(STORAGE_PROBE_KEY)  # raises when the store cannot be reached
        return True

    async def check() -> bool:
        try:
            return await asyncio.to_thread(probe)
        except Exception:
            metrics.STORAGE_FAILURES.labels(operation="probe").inc()
            raise

    return check


def _redis_check(settings: ApiSettings) -> Check:
    from redis.asyncio import Redis

    secret: Any = getattr(settings, "redis_url", None)
    url = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    client = Redis.from_url(url, socket_timeout=settings.readiness_timeout_seconds)

    async def check() -> bool:
        answer = client.ping()
        return bool(await answer if inspect.isawaitable(answer) else answer)

    return Check("redis", check, close=client.aclose, required=False)


def monitor_for(context: ApiContext, state_store: StateStore | None = None) -> ReadinessMonitor:
    settings = context.settings
    return ReadinessMonitor(
        readiness_checks(context, state_store),
        interval=settings.readiness_interval_seconds,
        timeout=settings.readiness_timeout_seconds,
    )


@router.get("/livez", response_model=Health, summary="The process is alive")
async def livez() -> Any:
    return Health(status="ok").to_json_dict()


@router.get(
    "/readyz",
    summary="Every dependency answered the last self-check (503 names the ones that did not)",
    responses={503: {"description": "a dependency is down or the API is shutting down"}},
)
async def readyz(request: Request, context: ContextDep) -> JSONResponse:
    monitor: ReadinessMonitor | None = getattr(request.app.state, "readiness", None)
    if monitor is None:  # an app built without the monitor: check the backend directly
        ready = await context.backend.ready()
        return JSONResponse(Readiness(ready).to_json(), status_code=200 if ready else 503)
    report = await monitor.current()
    return JSONResponse(report.to_json(), status_code=200 if report.ready else 503)
