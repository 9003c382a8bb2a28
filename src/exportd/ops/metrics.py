"""Every Prometheus metric exportd exposes, in one registry, named by Prometheus conventions.

Why one module: the dashboard (``charts/exportd/files/dashboards/exportd.json``) and the alerts
refer to these names, and a test checks that every name they use is defined here. Names use base
units (``_seconds``, ``_bytes``), counters end in ``_total``, and no label ever carries a user or
export id (unbounded label values would grow the time series without limit); labels are export
type and format (from the catalog), outcome, reason (stable CamelCase words from the code),
route templates and status codes.

Who feeds what:

- the API's middleware (:mod:`exportd.api.observability`): HTTP requests and refusals (4xx
  answers to export requests, by the problem's ``reason``: rate limits, credits, bad input);
- the local runner (embedded) and the operator (Kubernetes): exports as they reach a terminal
  phase. The short-lived exporter never pushes metrics; its figures (rows, bytes, times, error
  reason) arrive through its result or status and are turned into metrics here, by
  :func:`observe_finished`, exactly once per export (callers hand over only the one write that
  made an export terminal);
- housekeeping and the readiness self-check.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from exportd import __version__
from exportd.contract.spec import ExportErrorInfo, ExportSpec, ExportStatus, Phase

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_EXPORT_SECONDS_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_ROWS_BUCKETS = (10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
_BYTES_BUCKETS = tuple(float(2**power) for power in range(10, 36, 2))  # 1 KiB .. 32 GiB

BUILD = Info("exportd_build", "Version of the running exportd.", registry=REGISTRY)
BUILD.info({"version": __version__})

# -- HTTP API -------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "exportd_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "exportd_http_request_duration_seconds",
    "Time from request to the last byte of the answer, by method, route template and status.",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "exportd_http_requests_in_flight", "HTTP requests being served now.", registry=REGISTRY
)
REFUSALS = Counter(
    "exportd_export_refusals",
    "Export requests refused before an export was created (rate limit, credits, bad input, "
    "no token), by the problem's reason.",
    ["reason"],
    registry=REGISTRY,
)

# -- exports --------------------------------------------------------------------------------

EXPORTS = Counter(
    "exportd_exports",
    "Exports that reached a terminal phase, by type, format and outcome "
    "(succeeded, failed, cancelled).",
    ["type", "format", "outcome"],
    registry=REGISTRY,
)
EXPORT_FAILURES = Counter(
    "exportd_export_failures",
    "Failed exports by type and the exporter's (or runner's) reason.",
    ["type", "reason"],
    registry=REGISTRY,
)
EXPORT_RETRIES = Counter(
    "exportd_export_retries",
    "Attempts that failed transiently and were run again, by type and reason.",
    ["type", "reason"],
    registry=REGISTRY,
)
EXPORT_DURATION = Histogram(
    "exportd_export_duration_seconds",
    "Duration of successful exports, from the exporter's start to the stored file.",
    ["type", "format"],
    buckets=_EXPORT_SECONDS_BUCKETS,
    registry=REGISTRY,
)
EXPORT_ROWS = Histogram(
    "exportd_export_rows",
    "Rows written by successful exports.",
    ["type", "format"],
    buckets=_ROWS_BUCKETS,
    registry=REGISTRY,
)
EXPORT_SIZE = Histogram(
    "exportd_export_size_bytes",
    "Size of the files of successful exports.",
    ["type", "format"],
    buckets=_BYTES_BUCKETS,
    registry=REGISTRY,
)
EXPORTS_QUEUED = Gauge(
    "exportd_exports_queued", "Exports waiting for a free slot (queue depth).", registry=REGISTRY
)
EXPORTS_RUNNING = Gauge(
    "exportd_exports_running", "Exports whose exporter runs now.", registry=REGISTRY
)

# -- dependencies ---------------------------------------------------------------------------

STORAGE_FAILURES = Counter(
    "exportd_storage_failures",
    "Failed storage operations (publish, delete, probe), by operation.",
    ["operation"],
    registry=REGISTRY,
)
EMAIL_FAILURES = Counter(
    "exportd_email_failures",
    "Failed e-mail deliveries, by the reason of the SMTP failure.",
    ["reason"],
    registry=REGISTRY,
)
DEPENDENCY_UP = Gauge(
    "exportd_dependency_up",
    "1 when the last readiness self-check reached the dependency, else 0.",
    ["dependency"],
    registry=REGISTRY,
)
DEPENDENCY_DEGRADED = Gauge(
    "exportd_dependency_degraded",
    "1 when a dependency the API can serve without (Redis, storage, SMTP) failed the last "
    "readiness self-check; /readyz stays 200 and names it under `degraded`.",
    ["dependency"],
    registry=REGISTRY,
)

# -- operator -------------------------------------------------------------------------------

RECONCILES = Counter(
    "exportd_operator_reconciles",
    "Reconcile rounds of the operator (each looks at every ExportRequest and Job).",
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "exportd_operator_reconcile_errors",
    "Reconcile rounds that failed (some Kubernetes call failed; the round is retried).",
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "exportd_operator_reconcile_duration_seconds",
    "Duration of one reconcile round.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

# -- housekeeping ---------------------------------------------------------------------------

HOUSEKEEPING_RUNS = Counter(
    "exportd_housekeeping_runs",
    "Housekeeping runs by outcome (success, failure).",
    ["outcome"],
    registry=REGISTRY,
)
HOUSEKEEPING_ITEMS = Counter(
    "exportd_housekeeping_items",
    "What housekeeping did, by action: file_deleted, record_deleted, request_deleted, "
    "stuck_failed, upload_aborted.",
    ["action"],
    registry=REGISTRY,
)
HOUSEKEEPING_DURATION = Histogram(
    "exportd_housekeeping_duration_seconds",
    "Duration of one housekeeping run.",
    buckets=_EXPORT_SECONDS_BUCKETS,
    registry=REGISTRY,
)
HOUSEKEEPING_LAST_SUCCESS = Gauge(
    "exportd_housekeeping_last_success_timestamp_seconds",
    "Unix time of the last successful housekeeping run (alert when it gets old).",
    registry=REGISTRY,
)

# -- scheduled exports (exportd.contract.schedule; no schedule names as labels)
# -----------------------

SCHEDULE_RUNS = Counter(
    "exportd_schedule_runs",
    "Due schedule slots by what became of them: started, skipped (Forbid), refused (credits, "
    "queue, invalid order; not retried), missed (past startingDeadlineSeconds), failed.",
    ["outcome"],
    registry=REGISTRY,
)
SCHEDULE_MISSED_SLOTS = Counter(
    "exportd_schedule_missed_slots",
    "Schedule slots that passed without a run (downtime, suspension, deadline).",
    registry=REGISTRY,
)

# -- feeding --------------------------------------------------------------------------------

_STORAGE_REASON_PREFIXES = ("Storage", "Checksum", "ObjectNotFound")
_EMAIL_REASON_PREFIXES = ("Smtp", "InvalidEmail")


def observe_finished(spec: ExportSpec, status: ExportStatus) -> None:
    """Count one export that reached a terminal phase; call once per export."""
    if not status.phase.is_terminal:
        return
    kind = {"type": spec.type, "format": spec.format.value}
    EXPORTS.labels(**kind, outcome=status.phase.value.lower()).inc()
    if status.phase is Phase.SUCCEEDED:
        seconds = _seconds_between(status.started_at, status.completed_at)
        if seconds is not None:
            EXPORT_DURATION.labels(**kind).observe(seconds)
        if status.rows is not None:
            EXPORT_ROWS.labels(**kind).observe(status.rows)
        if status.bytes is not None:
            EXPORT_SIZE.labels(**kind).observe(status.bytes)
    elif status.phase is Phase.FAILED:
        reason = status.error.reason if status.error else "Unknown"
        EXPORT_FAILURES.labels(type=spec.type, reason=reason).inc()
        observe_dependency_failure(reason)


def observe_retry(spec: ExportSpec, error: ExportErrorInfo) -> None:
    """A transient failure of one attempt that will be run again."""
    EXPORT_RETRIES.labels(type=spec.type, reason=error.reason).inc()
    observe_dependency_failure(error.reason)


def observe_dependency_failure(reason: str) -> None:
    """Storage and e-mail failures are known by their reasons (see exportd.storage, .mail)."""
    if reason.startswith(_STORAGE_REASON_PREFIXES):
        STORAGE_FAILURES.labels(operation="publish").inc()
    elif reason.startswith(_EMAIL_REASON_PREFIXES):
        EMAIL_FAILURES.labels(reason=reason).inc()


def track_queue(queued: Callable[[], float], running: Callable[[], float]) -> None:
    """Read queue depth and running exports from their owner at scrape time (never stale)."""
    EXPORTS_QUEUED.set_function(queued)
    EXPORTS_RUNNING.set_function(running)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def exposition() -> bytes:
    """The registry in Prometheus' text format (what ``/metrics`` answers)."""
    return generate_latest(REGISTRY)


def metric_names() -> set[str]:
    """Every sample name the registry can expose, suffixes included (``_total``, ``_bucket``,
    ``_sum``, ``_count``, ``_created``, ``_info``): what a PromQL query may refer to."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"),
            "info": ("_info",),
        }.get(family.type, ())
        names.update(f"{family.name}{suffix}" for suffix in suffixes)
        names.update(sample.name for sample in family.samples)
    return names
