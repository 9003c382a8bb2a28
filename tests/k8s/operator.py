"""Runs the real operator (kopf + our handlers) in its own thread and event loop.

Like a deployment runs it in its own process: the test's loop serves the emulator and the
kubelet, the operator's loop is kopf's. It is stopped with kopf's stop flag (not cancelled), and
may be started again on the same cluster to test restarts. kopf reaches only the emulator: our
login handler names it, which also turns off kopf's fallback logins (no kubeconfig is read).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime

import kopf

from exportd.contract.spec import utc_now
from exportd.operator.connection import Cluster
from exportd.operator.handlers import register
from exportd.settings import OperatorSettings

STOP_TIMEOUT_SECONDS = 30


def quick(settings: kopf.OperatorSettings) -> None:
    """kopf settings that keep tests fast (see the notes on the emulator)."""
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 1.0
    settings.watching.server_timeout = 30
    settings.watching.client_timeout = 40
    settings.networking.request_timeout = 15


class OperatorThread:
    def __init__(
        self,
        settings: OperatorSettings,
        server: str,
        clock: Callable[[], datetime] = utc_now,
        liveness_endpoint: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.server = server
        self.liveness_endpoint = liveness_endpoint  # kopf's /healthz, as in the image
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._stop, self._ready = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self._thread.start()

    async def wait_ready(self, timeout: float = 30) -> None:
        ready = await asyncio.to_thread(self._ready.wait, timeout)
        if self._error is not None:
            raise RuntimeError("the operator failed to start") from self._error
        if not ready:
            raise TimeoutError("the operator did not become ready")

    async def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, STOP_TIMEOUT_SECONDS)
            if thread.is_alive():
                raise RuntimeError("the operator did not stop")
        self._thread = None
        if self._error is not None:
            raise RuntimeError("the operator crashed") from self._error

    def _main(self) -> None:
        registry = kopf.OperatorRegistry()
        cluster = Cluster(server=self.server, insecure=True)
        register(registry, self.settings, cluster, tuning=quick, clock=self.clock)
        namespace = self.settings.namespace
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    settings=kopf.OperatorSettings(),
                    standalone=True,
                    clusterwide=namespace is None,
                    namespaces=[namespace] if namespace else (),
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                    liveness_endpoint=self.liveness_endpoint,
                )
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
