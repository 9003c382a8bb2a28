"""The Argo CD health check on the states an ExportRequest goes through: Progressing until
it ended (and while the operator lags a generation), Healthy when it succeeded or was cancelled,
Degraded with the reason when it failed. The operator's real output is checked in
tests/integration/test_operator_events.py."""

from __future__ import annotations

from typing import Any

import pytest
from tests.argocd import argocd_health


def exr(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "e", "generation": generation}, "spec": {}}
    if status is not None:
        body["status"] = status
    return body


@pytest.mark.parametrize(
    ("body", "health", "says"),
    [
        (exr(None), "Progressing", "waiting"),
        (exr({"phase": "Queued", "queuePosition": 3, "observedGeneration": 1}), "Progressing", "3"),
        (exr({"phase": "Running", "rows": 10, "observedGeneration": 1}), "Progressing", "10 rows"),
        (exr({"phase": "Succeeded", "rows": 5, "observedGeneration": 1}), "Healthy", "5 rows"),
        (exr({"phase": "Cancelled", "observedGeneration": 1}), "Healthy", "cancelled"),
        (
            exr({"phase": "Failed", "reason": "QueryError", "message": "no such table"}),
            "Degraded",
            "QueryError: no such table",
        ),
        (exr({"phase": "Succeeded", "observedGeneration": 1}, generation=2), "Progressing", "not"),
    ],
)
def test_health_follows_the_phase_and_the_observed_generation(
    body: dict[str, Any], health: str, says: str
) -> None:
    result = argocd_health(body)
    assert result["status"] == health
    assert says in result["message"]
