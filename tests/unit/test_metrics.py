"""The metrics registry: Prometheus naming conventions, bounded labels, exact counting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from exportd.contract.spec import (
    ExportErrorInfo,
    ExportFormat,
    ExportSpec,
    ExportStatus,
    Phase,
)
from exportd.ops import metrics

FORBIDDEN_LABELS = {"id", "export_id", "exportid", "user", "sub", "owner", "requested_by", "path"}
BASE_UNIT_SUFFIXES = ("_seconds", "_bytes", "_rows", "_timestamp_seconds")


def _spec(type_name: str = "metricsTestType", file_name: str = "m.csv") -> ExportSpec:
    return ExportSpec(
        id="exp-metrics-1",
        type=type_name,
        format=ExportFormat.CSV,
        file_name=file_name,
        requested_by="alice@example.com",
        requested_at=datetime.now(UTC),
    )


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_names_follow_prometheus_conventions() -> None:
    """exportd_ prefix, counters end in _total, histograms carry a base unit, and no label
    can hold a user or an export id."""
    families = [f for f in metrics.REGISTRY.collect() if f.name.startswith("exportd_")]
    assert len(families) >= 20
    for family in families:
        assert family.name == family.name.lower(), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total"), "the client appends _total itself"
        if family.type == "histogram":
            assert family.name.endswith(BASE_UNIT_SUFFIXES), family.name
    for name, collector in metrics.REGISTRY._names_to_collectors.items():
        labels = set(getattr(collector, "_labelnames", ()))
        assert not labels & FORBIDDEN_LABELS, (name, labels)


def test_the_exposition_parses_and_counters_end_in_total() -> None:
    metrics.EXPORTS.labels(type="conventionType", format="csv", outcome="succeeded")
    text = metrics.exposition().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [s.name for f in families.values() for s in f.samples]
    assert "exportd_exports_total" in samples
    assert "exportd_build_info" in samples
    assert "process_resident_memory_bytes" in samples


def test_a_finished_export_is_counted_once_with_its_figures() -> None:
    spec = _spec("countedOnce")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    status = ExportStatus(
        phase=Phase.SUCCEEDED,
        rows=1234,
        bytes=5678,
        started_at=start,
        completed_at=start + timedelta(seconds=3),
    )
    labels = {"type": "countedOnce", "format": "csv"}
    metrics.observe_finished(spec, status)
    assert _value("exportd_exports_total", **labels, outcome="succeeded") == 1
    assert _value("exportd_export_duration_seconds_sum", **labels) == 3
    assert _value("exportd_export_rows_sum", **labels) == 1234
    assert _value("exportd_export_size_bytes_sum", **labels) == 5678
    assert _value("exportd_export_rows_bucket", **labels, le="10000.0") == 1
    assert _value("exportd_export_rows_bucket", **labels, le="1000.0") == 0


def test_failures_count_by_reason_and_storage_or_email_reasons_count_there_too() -> None:
    spec = _spec("failingType")
    storage_before = _value("exportd_storage_failures_total", operation="publish")
    email_before = _value("exportd_email_failures_total", reason="SmtpUnavailable")
    failed = ExportStatus(
        phase=Phase.FAILED, error=ExportErrorInfo(reason="StorageUnavailable", message="down")
    )
    metrics.observe_finished(spec, failed)
    metrics.observe_retry(spec, ExportErrorInfo(reason="SmtpUnavailable", message="later"))
    metrics.observe_retry(spec, ExportErrorInfo(reason="SourceUnavailable", message="later"))
    assert _value("exportd_exports_total", type="failingType", format="csv", outcome="failed") == 1
    assert (
        _value("exportd_export_failures_total", type="failingType", reason="StorageUnavailable")
        == 1
    )
    assert _value("exportd_export_retries_total", type="failingType", reason="SmtpUnavailable") == 1
    assert _value("exportd_storage_failures_total", operation="publish") == storage_before + 1
    assert _value("exportd_email_failures_total", reason="SmtpUnavailable") == email_before + 1


def test_non_terminal_statuses_are_not_counted() -> None:
    spec = _spec("stillRunning")
    metrics.observe_finished(spec, ExportStatus(phase=Phase.RUNNING))
    labels = {"type": "stillRunning", "format": "csv"}
    assert _value("exportd_exports_total", **labels, outcome="running") == 0


def test_queue_gauges_read_their_owner_at_scrape_time() -> None:
    depth = [3]
    metrics.track_queue(lambda: depth[0], lambda: 2)
    assert _value("exportd_exports_queued") == 3
    depth[0] = 7
    assert _value("exportd_exports_queued") == 7
    assert _value("exportd_exports_running") == 2
