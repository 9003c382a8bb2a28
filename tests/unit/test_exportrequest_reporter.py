"""The exporter's Kubernetes reporter against the apiserver emulator: progress, result and error
land on the ExportRequest's status (and only there), the stdout lines still go out, a request
that is gone is no failure, and a result that cannot be written exits 75 so the Job retries."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import yaml
from tests.k8s.cluster import CRD_PATH, new_apiserver
from tests.k8s.emulator import ApiServer
from tests.k8s.fixtures import anyio_backend_fixture  # noqa: F401

from exportd.contract.errors import PermanentFailure
from exportd.contract.spec import ExportResult
from exportd.exporter.report_kubernetes import KubernetesStatusReporter, select_reporter
from exportd.exporter.reporting import StdoutReporter
from exportd.settings import ExporterSettings

pytestmark = pytest.mark.anyio

REQUESTS = "exportd.dev/v1alpha1/exportrequests"
RESULT = ExportResult(
    rows_read=3,
    rows_written=3,
    bytes=30,
    sha256="ef" * 32,
    object_key="exports/exp-1/a.csv",
    started_at=datetime(2025, 1, 1, tzinfo=UTC),
    completed_at=datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC),
)


@pytest.fixture
async def apiserver() -> AsyncIterator[tuple[ApiServer, str]]:
    api = new_apiserver()
    async with (
        api,
        kmock.Server(api) as server,
        aiohttp.ClientSession(base_url=str(server.url)) as session,
    ):
        crd = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
        await session.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
        body = {"metadata": {"name": "exp-1"}, "spec": {"type": "t", "fileName": "a.csv"}}
        url = "/apis/exportd.dev/v1alpha1/namespaces/ns/exportrequests"
        created = await session.post(url, json=body)
        assert created.status == 201, await created.text()
        yield api, str(server.url).rstrip("/")


def settings_for(url: str, tmp_path: Path) -> ExporterSettings:
    return ExporterSettings(
        data_dir=tmp_path,
        reporter="kubernetes",
        kube_api_url=url,
        kube_namespace="ns",
        kube_token_path=tmp_path / "no-token",
    )


def status_of(api: ApiServer) -> dict[str, Any]:
    body = api.current(REQUESTS, "ns", "exp-1")
    assert body is not None
    status: dict[str, Any] = body.get("status") or {}
    return status


async def test_progress_and_result_land_on_the_status_and_on_stdout(
    apiserver: tuple[ApiServer, str], tmp_path: Path
) -> None:
    api, url = apiserver
    stdout = io.StringIO()
    reporter = select_reporter(settings_for(url, tmp_path), StdoutReporter(stdout))
    assert isinstance(reporter, KubernetesStatusReporter)

    await asyncio.to_thread(reporter.started, "exp-1")
    await api.wait_until(lambda: status_of(api).get("progress"), 10)
    await asyncio.to_thread(reporter.progress, "exp-1", 2)
    await asyncio.to_thread(reporter.result, RESULT)

    status = status_of(api)
    assert ExportResult.model_validate(status["result"]) == RESULT
    assert status["progress"]["rows"] == 3
    assert set(status) == {"progress", "result"}  # nothing the operator owns
    events = [json.loads(line)["event"] for line in stdout.getvalue().splitlines()]
    assert events == ["started", "progress", "result"]


async def test_an_error_is_reported_as_last_error(
    apiserver: tuple[ApiServer, str], tmp_path: Path
) -> None:
    api, url = apiserver
    reporter = KubernetesStatusReporter(StdoutReporter(io.StringIO()), settings_for(url, tmp_path))
    await asyncio.to_thread(reporter.started, "exp-1")
    await asyncio.to_thread(reporter.error, PermanentFailure("no table", reason="QueryError"))
    assert status_of(api)["lastError"] == {
        "reason": "QueryError",
        "message": "no table",
        "retriable": False,
    }


async def test_a_request_that_is_gone_is_not_an_error(
    apiserver: tuple[ApiServer, str], tmp_path: Path
) -> None:
    _, url = apiserver
    reporter = KubernetesStatusReporter(StdoutReporter(io.StringIO()), settings_for(url, tmp_path))
    await asyncio.to_thread(reporter.started, "exp-deleted")
    await asyncio.to_thread(reporter.result, RESULT)  # no exception, no exit


async def test_a_result_that_cannot_be_written_exits_75_for_a_retry(tmp_path: Path) -> None:
    unreachable = settings_for("http://127.0.0.1:9", tmp_path)
    reporter = KubernetesStatusReporter(
        StdoutReporter(io.StringIO()), unreachable, attempts=2, retry_delay=0.01
    )
    await asyncio.to_thread(reporter.started, "exp-1")
    with pytest.raises(SystemExit) as exited:
        await asyncio.to_thread(reporter.result, RESULT)
    assert exited.value.code == 75


def test_stdout_stays_the_reporter_unless_kubernetes_is_chosen(tmp_path: Path) -> None:
    default = StdoutReporter(io.StringIO())
    assert select_reporter(ExporterSettings(data_dir=tmp_path), default) is default
