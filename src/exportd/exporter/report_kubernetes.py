"""Reports an exporter's progress and result on its ExportRequest's status (Kubernetes mode).

Selected by ``EXPORTD_REPORTER=kubernetes`` (the operator sets it in every Job). The stdout JSON
lines are still written (they are the pod's log); in addition the reporter merge-patches the
status subresource of the ExportRequest named like the export, in ``EXPORTD_KUBE_NAMESPACE``:

- ``status.progress`` (rows so far), at most every :data:`PROGRESS_MIN_SECONDS`, from a
  background thread so a slow API never slows the export;
- ``status.lastError`` when an attempt fails;
- ``status.result`` once the file is stored. The operator needs it to publish the link, so it is
  retried, and if it still cannot be written the process exits 75 (transient): the Job runs the
  export again, finds the file already stored, and reports it then.

Plain HTTP from the standard library: the exporter image needs no Kubernetes client, and the
service account needs only ``get`` and ``patch`` on ``exportrequests/status``. The token file is
read for every request, as projected tokens rotate.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from exportd.contract import exportrequest as er
from exportd.contract.errors import ExitCode, ExportdError
from exportd.contract.spec import ExportResult, utc_now
from exportd.exporter.reporting import Reporter
from exportd.security.reports import sign_result
from exportd.settings import ExporterSettings

log = logging.getLogger(__name__)
PROGRESS_MIN_SECONDS = 2.0
REQUEST_TIMEOUT_SECONDS = 10.0
RESULT_ATTEMPTS = 6
RETRY_BASE_SECONDS = 0.5


class StatusNotWritten(Exception):
    pass


class StatusClient:
    """Merge-patches one ExportRequest's status subresource."""

    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings
        self._context: ssl.SSLContext | None = None
        if settings.kube_api_url.startswith("https://"):
            ca = settings.kube_ca_path
            self._context = ssl.create_default_context(cafile=str(ca) if ca.exists() else None)

    def url(self, name: str) -> str:
        base = self.settings.kube_api_url.rstrip("/")
        namespace = quote(self.settings.kube_namespace, safe="")
        path = f"/apis/{er.GROUP}/{er.VERSION}/namespaces/{namespace}/{er.PLURAL}"
        return f"{base}{path}/{quote(name, safe='')}/status"

    def patch(self, name: str, body: dict[str, Any]) -> bool:
        """True when written, False when the request no longer exists; raises otherwise."""
        headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
        token_path = self.settings.kube_token_path
        if token_path.exists():
            headers["Authorization"] = f"Bearer {token_path.read_text().strip()}"
        request = urllib.request.Request(  # noqa: S310 - the URL is our configured API server
            self.url(name), data=json.dumps(body).encode(), headers=headers, method="PATCH"
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=REQUEST_TIMEOUT_SECONDS, context=self._context
            ):
                return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise StatusNotWritten(f"{exc.code} {exc.read()[:500]!r}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StatusNotWritten(str(exc)) from exc

    def patch_retrying(
        self, name: str, body: dict[str, Any], attempts: int, base_delay: float
    ) -> bool:
        for attempt in range(attempts):
            try:
                return self.patch(name, body)
            except StatusNotWritten as exc:
                log.warning("status of %s not written (attempt %d): %s", name, attempt + 1, exc)
                if attempt + 1 < attempts:
                    time.sleep(base_delay * 2**attempt)
        raise StatusNotWritten(f"gave up writing the status of {name}")


class _ProgressSender(threading.Thread):
    """Sends the latest row count now and then; older counts are simply replaced."""

    def __init__(self, client: StatusClient, name: str, interval: float) -> None:
        super().__init__(name="status-progress", daemon=True)
        self.client, self.export_name, self.interval = client, name, interval
        self._changed = threading.Condition()
        self._rows: int | None = None
        self._stopped = False

    def offer(self, rows: int) -> None:
        with self._changed:
            self._rows = rows
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self.join()

    def run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._rows is not None or self._stopped)
                if self._stopped:
                    return
                rows, self._rows = self._rows, None
            try:
                self.client.patch(self.export_name, er.progress_patch(rows or 0, utc_now()))
            except StatusNotWritten as exc:
                log.warning("progress of %s not reported: %s", self.export_name, exc)
            with self._changed:
                self._changed.wait_for(lambda: self._stopped, timeout=self.interval)


class KubernetesStatusReporter:
    """Everything ``inner`` reports, plus the ExportRequest's status."""

    def __init__(
        self,
        inner: Reporter,
        settings: ExporterSettings,
        *,
        progress_interval: float = PROGRESS_MIN_SECONDS,
        attempts: int = RESULT_ATTEMPTS,
        retry_delay: float = RETRY_BASE_SECONDS,
    ) -> None:
        self.inner = inner
        self.client = StatusClient(settings)
        self.progress_interval = progress_interval
        self.attempts, self.retry_delay = attempts, retry_delay
        self._name: str | None = None
        self._sender: _ProgressSender | None = None

    def started(self, export_id: str) -> None:
        self.inner.started(export_id)
        self._name = export_id
        self._sender = _ProgressSender(self.client, export_id, self.progress_interval)
        self._sender.start()
        self._sender.offer(0)

    def progress(self, export_id: str, rows: int) -> None:
        self.inner.progress(export_id, rows)
        if self._sender is not None:
            self._sender.offer(rows)

    def result(self, result: ExportResult) -> None:
        self.inner.result(result)
        self._stop_progress()
        name = self._require_name()
        try:
            body = er.result_patch(result, utc_now())
            if self.client.settings.report_key is not None:
                key = self.client.settings.report_key.get_secret_value()
                signed = sign_result(key, name, body["status"]["result"])
                body["status"]["resultSignature"] = signed
            self.client.patch_retrying(name, body, self.attempts, self.retry_delay)
        except StatusNotWritten as exc:
            log.error("the result of %s could not be reported; exiting 75 to retry: %s", name, exc)
            raise SystemExit(int(ExitCode.TRANSIENT)) from exc

    def error(self, error: ExportdError) -> None:
        self.inner.error(error)
        self._stop_progress()
        if self._name is None:
            return  # failed before the spec was read: nothing names the request
        try:
            self.client.patch_retrying(
                self._name, er.error_patch(error), min(self.attempts, 3), self.retry_delay
            )
        except StatusNotWritten as exc:
            log.warning("the error of %s could not be reported: %s", self._name, exc)

    def _stop_progress(self) -> None:
        if self._sender is not None:
            self._sender.stop()
            self._sender = None

    def _require_name(self) -> str:
        if self._name is None:
            raise RuntimeError("result reported before started")
        return self._name


def select_reporter(settings: ExporterSettings, default: Reporter) -> Reporter:
    """The reporter ``settings.reporter`` names, around ``default`` (stdout)."""
    if settings.reporter == "kubernetes":
        return KubernetesStatusReporter(default, settings)
    return default
