"""The operator's Prometheus metrics: reconcile rounds, exports by outcome, queue, ``/metrics``.

Why here and not in the controller: metrics are an observer's concern, registered next to the
operator's handlers by one call (:func:`register_metrics`) and touching none of its logic.

- Reconcile rounds: the controller offers no hook, so at startup the round method of the one
  controller instance is wrapped with a timer (count, errors, duration). The class is untouched.
- Exports: the exporter reports rows, bytes and times on its ExportRequest's status (never to a
  Pushgateway); an event handler watches each request's phase and counts the request once when
  it is seen moving from a non-terminal phase to a terminal one, with the figures on its status.
  A request that finished while the operator was down is not counted (counters restart with the
  process anyway, which ``rate()``/``increase()`` handle).
- Queue depth and running exports: the phases of the requests seen, read at scrape time.
- ``/metrics`` is served on ``metrics_port`` (kopf's liveness server serves only ``/healthz``),
  once per process.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf
from prometheus_client import start_http_server

from exportd.contract import exportrequest as er
from exportd.contract.spec import Phase
from exportd.operator.controller import Controller
from exportd.ops import metrics

log = logging.getLogger(__name__)
_server_lock = threading.Lock()
_served_port: int | None = None


class PhaseTracker:
    """The last phase seen of every request (by uid); counts terminal transitions once."""

    def __init__(self) -> None:
        self.phases: dict[str, Phase | None] = {}

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        uid = str(er.metadata(body).get("uid") or "")
        if event_type == "DELETED":
            self.phases.pop(uid, None)
            return
        status = er.status_of(body)
        before_seen = uid in self.phases
        before = self.phases.get(uid)
        self.phases[uid] = status.phase
        now_terminal = status.phase is not None and status.phase.is_terminal
        was_open = before_seen and (before is None or not before.is_terminal)
        if now_terminal and was_open:
            self._count(body)

    @staticmethod
    def _count(body: dict[str, Any]) -> None:
        try:
            spec = er.export_spec_from_body(body)
        except ValueError:  # an invalid order (it failed as InvalidSpec): nothing to label by
            return
        metrics.observe_finished(spec, er.export_status_from_body(body))

    def count(self, phase: Phase) -> int:
        return sum(1 for seen in self.phases.values() if seen is phase)


def instrument(controller: Controller) -> None:
    """Time every reconcile round of ``controller`` (see the module docstring)."""
    original: Callable[[], Awaitable[None]] = controller._round

    @functools.wraps(original)
    async def timed_round() -> None:
        started = time.perf_counter()
        metrics.RECONCILES.inc()
        try:
            await original()
        except BaseException:
            metrics.RECONCILE_ERRORS.inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)

    controller._round = timed_round  # type: ignore[method-assign]


def serve_metrics(port: int) -> None:
    """Start the ``/metrics`` server once per process; a busy port is logged, not fatal (the
    operator's work matters more than its metrics)."""
    global _served_port
    with _server_lock:
        if _served_port is not None or port == 0:
            return
        try:
            start_http_server(port, registry=metrics.REGISTRY)
        except OSError as exc:
            log.error("cannot serve /metrics on port %d: %s", port, exc)
            return
        _served_port = port
        log.info("serving /metrics on port %d", port)


def register_metrics(registry: kopf.OperatorRegistry, runtime: Any) -> PhaseTracker:
    """Add the metrics handlers to the operator's ``registry`` (after its own handlers, so
    its startup has built the controller when ours runs)."""
    tracker = PhaseTracker()
    metrics.track_queue(
        lambda: tracker.count(Phase.QUEUED) + tracker.count(Phase.PENDING),
        lambda: tracker.count(Phase.RUNNING),
    )

    # Serving metrics cannot fail the operator (a busy port is logged): no retries needed.
    @kopf.on.startup(registry=registry, id="exportd-metrics", retries=1, timeout=10)
    async def start_metrics(**_: Any) -> None:
        if runtime.controller is not None:
            instrument(runtime.controller)
        serve_metrics(runtime.settings.metrics_port)

    @kopf.on.event(er.GROUP, er.VERSION, er.PLURAL, registry=registry, id="exportd-metrics")
    def request_seen(type: str | None, body: kopf.Body, **_: Any) -> None:
        tracker.observe(type, dict(body))

    return tracker
