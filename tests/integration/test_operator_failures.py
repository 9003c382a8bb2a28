"""Failure paths, driven through the kubelet: the exporter's exit codes decide retries.

A database error is permanent (exit 3, podFailurePolicy FailJob): one attempt, the exporter's
reason on the request. An unavailable source is transient (exit 75): retried by the Job up to
backoffLimit, then Failed with the reason. A transient failure followed by a good attempt ends
Succeeded.
"""

from __future__ import annotations

import pytest

from exportd.contract.errors import ExitCode
from tests.k8s.cluster import LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture, operator_fixture  # noqa: F401
from tests.k8s.operator import OperatorThread

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

TERMINAL = ("Succeeded", "Failed", "Cancelled")


def only_job_name(cluster: LocalCluster) -> str:
    [job] = cluster.jobs()
    name: str = job["metadata"]["name"]
    return name


async def test_a_permanent_exporter_failure_fails_after_one_attempt_with_its_reason(
    cluster: LocalCluster, operator: OperatorThread
) -> None:
    spec = {"type": "brokenQuery", "fileName": "broken.csv", "variables": {"one": 1}}
    await cluster.create_request("exp-broken", spec)
    body = await cluster.until_phase("exp-broken", *TERMINAL)

    status = body["status"]
    assert status["phase"] == "Failed"
    assert status["reason"] == "QueryError"  # the exporter's own reason, via status.lastError
    assert "no_such_table" in status["message"]
    assert status["attempts"] == 1
    attempts = cluster.kubelet.attempts_of(only_job_name(cluster))
    assert [a.exit_code for a in attempts] == [ExitCode.PERMANENT]


async def test_a_transient_failure_is_retried_and_the_next_attempt_succeeds(
    cluster: LocalCluster, operator: OperatorThread
) -> None:
    cluster.kubelet.inject("exp-flaky", [ExitCode.TRANSIENT])
    variables = {"a": "muscle1", "b": "muscle2"}
    spec = {"type": "menuCategoriesByMuscle", "fileName": "menus.csv", "variables": variables}
    await cluster.create_request("exp-flaky", spec)
    body = await cluster.until_phase("exp-flaky", *TERMINAL)

    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 2
    attempts = cluster.kubelet.attempts_of(only_job_name(cluster))
    assert [(a.exit_code, a.injected) for a in attempts] == [(75, True), (0, False)]
    assert status["url"]


async def test_a_failure_that_stays_transient_fails_after_the_retry_budget(
    cluster: LocalCluster, operator: OperatorThread
) -> None:
    """backoffLimit 2 (the default): three attempts, then Failed with the exporter's reason."""
    spec = {"type": "missingDatabase", "fileName": "nothing.csv", "variables": {"one": 1}}
    await cluster.create_request("exp-missing", spec)
    body = await cluster.until_phase("exp-missing", *TERMINAL)

    status = body["status"]
    assert status["phase"] == "Failed"
    assert status["reason"] == "SourceUnavailable"
    assert status["message"].startswith("gave up after 3 attempts: ")
    assert status["attempts"] == 3
    attempts = cluster.kubelet.attempts_of(only_job_name(cluster))
    assert [a.exit_code for a in attempts] == [ExitCode.TRANSIENT] * 3
