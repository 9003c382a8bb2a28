"""``kubectl exportd`` (the package's ``kubectl-exportd`` plugin) run through kubectl itself
against the test apiserver, the real operator and exporter, files in S3 (moto) so the signed
link downloads for real: get shows the outcome, download writes the file the status describes
(its SHA-256), cancel stops a running export, rerun runs the same spec as a new request, and
logs names the request's Job to kubectl (no pods exist here to read logs from).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from tests.integration.server_fixtures import moto_fixture, s3_bucket_fixture  # noqa: F401
from tests.integration.storage_servers import storage_env
from tests.k8s.cluster import ExportSetup, local_cluster, write_catalog
from tests.k8s.fixtures import anyio_backend_fixture  # noqa: F401
from tests.k8s.kubectl import Kubectl, kube_tools_dir

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
SEED = {"type": "userExport", "fileName": "seed.csv", "variables": {"x": 1, "y": 1}}
ENDLESS = {"type": "endlessRows", "fileName": "e.csv", "variables": {"n": 10**12}}


async def test_get_download_cancel_rerun_and_logs(
    s3_bucket: object, tmp_path: Path, sample_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exportd.settings import StorageConfig

    assert isinstance(s3_bucket, StorageConfig)
    env = storage_env(s3_bucket, tmp_path)
    env.pop("EXPORTD_DATA_DIR")
    setup = ExportSetup(
        tmp_path / "data", write_catalog(tmp_path / "catalog"), sample_db, extra_env=env
    )
    tools = kube_tools_dir()
    async with local_cluster(tmp_path, sample_db, setup=setup) as cluster:
        # kubectl finds the plugin on PATH, as a user's kubectl does.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        monkeypatch.setenv("PATH", path)
        kubectl = Kubectl(tools / "kubectl", tmp_path / "home", cluster.url)
        operator = await cluster.start_operator(storage=s3_bucket)
        try:
            await cluster.create_request("seed", SEED)
            done = await cluster.until_phase("seed", "Succeeded", "Failed")
            shown = await kubectl.plugin("exportd", "get", "seed")
            target = tmp_path / "downloaded.csv"
            downloaded = await kubectl.plugin("exportd", "download", "seed", "-f", str(target))
            await cluster.create_request("endless", ENDLESS)
            await cluster.until(lambda: cluster.phase("endless") == "Running")
            cancelled = await kubectl.plugin("exportd", "cancel", "endless")
            await cluster.until(lambda: cluster.phase("endless") == "Cancelled")
            rerun = await kubectl.plugin("exportd", "rerun", "seed", "--name", "seed-again")
            again = await cluster.until_phase("seed-again", "Succeeded", "Failed")
            logs = await kubectl.plugin("exportd", "logs", "seed", "--pod-running-timeout=1s")
            missing = await kubectl.plugin("exportd", "get", "no-such-export")
        finally:
            await operator.stop()

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert shown.returncode == 0, shown.stderr
    assert "Phase:    Succeeded" in shown.stdout
    assert f"Rows:     {done['status']['rows']}" in shown.stdout
    assert "Condition:Complete=True" in shown.stdout
    assert downloaded.returncode == 0, downloaded.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == done["status"]["sha256"]
    assert cancelled.returncode == 0, cancelled.stderr
    assert rerun.returncode == 0, rerun.stderr
    assert again["status"]["phase"] == "Succeeded"
    assert again["spec"]["variables"] == SEED["variables"]
    # kubectl logs job/<jobName>: the Job is named, kubectl finds no pod of it here.
    assert f"logs of job/{done['status']['jobName']}" in logs.stderr
    assert missing.returncode == 1 and "error:" in missing.stderr
