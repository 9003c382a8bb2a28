"""Serving the app with uvicorn, and draining it on SIGTERM before the listener closes.

Kubernetes sends SIGTERM and removes the pod from its Service at about the same time, and load
balancers keep sending new requests until their next readiness probe. So on the first SIGTERM
``/readyz`` answers 503 (:meth:`~exportd.api.probes.ReadinessMonitor.drain`) while requests are
still served, for ``shutdown_drain_seconds``; then uvicorn's own graceful shutdown runs (the
listener closes, requests in flight finish, the lifespan hands running exports back without
charging them an attempt). A second SIGTERM, or SIGINT, skips what is left of the window.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_seconds: float) -> None:
        super().__init__(config)
        self.exportd_app = app
        self.drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or sig != signal.SIGTERM or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        monitor = getattr(self.exportd_app.state, "readiness", None)
        if monitor is not None:
            monitor.drain()
        log.info(
            "SIGTERM: /readyz answers 503 for %.1f s, then the server stops", self.drain_seconds
        )
        timer = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()
