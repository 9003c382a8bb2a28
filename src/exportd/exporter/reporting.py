"""How an exporter process tells the world what it is doing.

The default is the stdout protocol that the embedded runner reads (one JSON object per line):

.. code-block:: text

    {"event": "started", "exportId": "exp-..."}                      first line
    {"event": "progress", "exportId": "exp-...", "rows": 120000}     at most every
                                                                     progress_interval_seconds
    {"event": "result", "rowsRead": ..., "rowsWritten": ..., ...}    last line on success
                                                                     (ExportResult fields)
    {"event": "error", "reason": "...", "message": "...", "retriable": false}
                                                                     last line on failure

Logs go to stderr only. Another reporter (e.g. one patching a Kubernetes object's status)
implements the same :class:`Reporter` protocol.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any, Protocol

from exportd.contract.errors import ExportdError
from exportd.contract.spec import ExportResult


class Reporter(Protocol):
    def started(self, export_id: str) -> None: ...

    def progress(self, export_id: str, rows: int) -> None: ...

    def result(self, result: ExportResult) -> None: ...

    def error(self, error: ExportdError) -> None: ...


class StdoutReporter:
    """JSON lines on stdout, each flushed at once so a reader sees it without delay."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def _emit(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def started(self, export_id: str) -> None:
        self._emit({"event": "started", "exportId": export_id})

    def progress(self, export_id: str, rows: int) -> None:
        self._emit({"event": "progress", "exportId": export_id, "rows": rows})

    def result(self, result: ExportResult) -> None:
        self._emit({"event": "result", **result.to_json_dict()})

    def error(self, error: ExportdError) -> None:
        self._emit(
            {
                "event": "error",
                "reason": error.reason,
                "message": error.message,
                "retriable": error.retriable,
            }
        )


class ThrottledProgress:
    """A progress callback that passes at most one report per ``interval`` seconds on."""

    def __init__(self, reporter: Reporter, export_id: str, interval: float) -> None:
        self._reporter = reporter
        self._export_id = export_id
        self._interval = interval
        self._last = float("-inf")

    def __call__(self, rows: int) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._reporter.progress(self._export_id, rows)
