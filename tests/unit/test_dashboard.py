"""The Grafana dashboard shipped in the chart queries only metrics exportd really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from exportd.ops import metrics

DASHBOARD = (
    Path(__file__).parents[2] / "charts" / "exportd" / "files" / "dashboards" / "exportd.json"
)
# PromQL words that look like metric names but are not: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "rate", "irate", "increase", "delta", "idelta",
    "histogram_quantile", "time", "abs", "ceil", "floor", "round", "clamp_min", "clamp_max",
    "label_replace", "label_values", "vector", "scalar", "absent", "changes", "resets",
    "sum_over_time", "avg_over_time", "max_over_time", "min_over_time", "deriv", "predict_linear",
    "timestamp", "sort", "sort_desc", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_LABEL_VALUES = re.compile(r"label_values\(([^,()]+),\s*\w+\)")  # Grafana: (metric, label)
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, ranges, groupings,
    strings and Grafana variables removed first, then function calls skipped)."""
    text = _LABEL_VALUES.sub(r"\1", _VARIABLE.sub("", expr))
    text = _MATCHERS.sub("", _STRING.sub('""', text))
    text = _GROUPING.sub("", _RANGE.sub("", text))
    names = {match.group(1) for match in _IDENTIFIER.finditer(text)}
    return {name for name in names if name.lower() not in PROMQL_WORDS}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                promql = key in ("expr", "definition") or (key == "query" and "(" in str(value))
                if promql and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    return found


def test_the_parser_finds_names_and_skips_functions_labels_and_variables() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (route, le) (rate(exportd_http_request_duration_"
        'seconds_bucket{job=~"$job",route!="/x"}[$__rate_interval]))) / on(job) '
        'group_left up{job="a"} + time() - exportd_exports_total offset 5m'
    )
    assert metric_names_in(expr) == {
        "exportd_http_request_duration_seconds_bucket",
        "up",
        "exportd_exports_total",
    }


def test_the_dashboard_has_panels_with_queries_for_each_area() -> None:
    """Throughput, latency, failures, queue and export durations are all on it."""
    expressions = dashboard_expressions()
    used = set().union(*(metric_names_in(e) for e in expressions))
    for wanted in (
        "exportd_exports_total",  # throughput
        "exportd_http_request_duration_seconds_bucket",  # latency
        "exportd_export_failures_total",  # failures
        "exportd_exports_queued",  # queue
        "exportd_export_duration_seconds_bucket",  # export durations
    ):
        assert wanted in used, wanted
    assert len(expressions) >= 20


@pytest.mark.parametrize("expr", dashboard_expressions())
def test_every_metric_the_dashboard_queries_is_exported(expr: str) -> None:
    """Each name in each PromQL query exists in the registry (with its sample suffix)."""
    names = metric_names_in(expr)
    assert names, f"no metric found in {expr!r}"
    missing = names - metrics.metric_names()
    assert not missing, f"{expr!r} uses metrics nobody exports: {sorted(missing)}"


def test_an_unknown_metric_would_be_caught() -> None:
    """The check above can fail: a misspelt name is not among the exported ones."""
    assert "exportd_export_total" not in metrics.metric_names()
    assert "exportd_exports_total" in metrics.metric_names()
    assert "exportd_export_duration_seconds_bucket" in metrics.metric_names()
