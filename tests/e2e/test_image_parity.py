"""Image parity: each image's install set, installed alone into a clean venv, runs its entrypoint
with every storage kind its settings can select.

No Docker engine runs here, so each image is reproduced the way its Dockerfile builds it: a venv
created without pip, into which pip installs ``.[EXTRAS]``, EXTRAS read from the image's
``extras.txt`` (the very file the Dockerfile bind-mounts). Nothing of the test venv leaks in: the
processes run the image venv's own ``exportd`` / ``python``.

- API image: ``exportd serve`` (embedded) with local, S3 (moto) and GCS (emulator) storage
  becomes ready (its readiness check reaches the storage), runs a seed export and serves the
  file through its link.
- Operator and exporter images: ``python -m exportd.operator`` (the operator image's entrypoint,
  a separate process, kubeconfig pointing at the emulator) reconciles an ExportRequest whose Job
  the test kubelet runs as ``python -m exportd.exporter`` from the exporter image's venv; the
  request ends Succeeded with a signed link, the file is in the storage.

The venvs are built once per content of ``pyproject.toml`` and the extras file (under
``.cache/image-venvs``, from pip's cache) and exportd itself is reinstalled from the source tree
in every session, so a run after the first costs seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exportd.settings import CommonSettings, StorageConfig
from exportd.storage import storage_from_settings
from tests.e2e.conftest import Server, free_port
from tests.images import IMAGES, ROOT, Image
from tests.integration.conftest import SEED_BODY
from tests.integration.storage_servers import (
    ServerProcess,
    fresh_s3_bucket,
    gcs_config,
    start_gcs_emulator,
    start_moto,
    storage_env,
    write_service_account,
)
from tests.k8s.cluster import (
    CATALOG_CONFIG_MAP,
    EXPORTER_CONFIG_MAP,
    EXPORTER_SECRET,
    NAMESPACE,
    REQUESTS,
    ExportSetup,
    local_cluster,
    write_catalog,
)
from tests.k8s.fixtures import anyio_backend_fixture, download  # noqa: F401
from tests.k8s.kubectl import write_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.images]

VENVS = ROOT / ".cache" / "image-venvs"
GCS_BUCKET = "exports-parity"
STORAGE_KINDS = ("local", "s3", "gcs")
INSTALL_TIMEOUT_SECONDS = 900


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def install_recipe(image: Image) -> bytes:
    """What decides an image's venv: the extras file and the runtime requirements in
    pyproject.toml (not the test or bench extras, which no image installs)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = {
        name: deps
        for name, deps in project["optional-dependencies"].items()
        if name not in ("test", "bench")
    }
    recipe = {"dependencies": project["dependencies"], "extras": extras}
    return json.dumps(recipe, sort_keys=True).encode() + image.extras_file.read_bytes()


def image_venv(image: Image) -> Path:
    """The image's venv, as scripts/image-build.sh builds it (no pip inside, ``.[EXTRAS]``)."""
    digest = hashlib.sha256(install_recipe(image) + sys.version.encode()).hexdigest()[:16]
    venv = VENVS / f"{image.name}-{digest}"
    if not venv.exists():
        building = VENVS / f".{venv.name}.{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(building)], check=True)
        _pip("--python", str(building / "bin" / "python"), "install", f".[{image.extras}]")
        for stale in VENVS.glob(f"{image.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        building.rename(venv)  # venvs hold no absolute path of their own outside bin/ scripts
    # The dependencies are the image's; exportd itself is this source tree, every session.
    _pip("--python", str(venv / "bin" / "python"), "install", "--no-deps", "--force-reinstall", ".")
    return venv


@pytest.fixture(scope="module")
def venvs() -> dict[str, Path]:
    return {name: image_venv(image) for name, image in IMAGES.items()}


@pytest.fixture(scope="module")
def moto() -> Iterator[ServerProcess]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gcs() -> Iterator[ServerProcess]:
    server = start_gcs_emulator(GCS_BUCKET)
    yield server
    server.stop()


@pytest.fixture(params=STORAGE_KINDS)
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, moto: ServerProcess, gcs: ServerProcess
) -> StorageConfig | None:
    """The storage of this run; None is local storage under the process's data directory."""
    if request.param == "s3":
        return fresh_s3_bucket(moto.url)
    if request.param == "gcs":
        return gcs_config(gcs.url, GCS_BUCKET, write_service_account(tmp_path / "sa.json"))
    return None


def settings_env(storage: StorageConfig | None, tmp_path: Path) -> dict[str, str]:
    if storage is None:
        return {}
    env = storage_env(storage, tmp_path)
    env.pop("EXPORTD_DATA_DIR")
    return env


def test_api_image_serves_and_exports_with_each_storage_kind(
    venvs: dict[str, Path], storage: StorageConfig | None, tmp_path: Path, sample_db: Path
) -> None:
    """The API image's install set runs ``exportd serve``: ready (storage reached), a seed export
    through POST /export, its link answers with the file."""
    server = Server(tmp_path / "data", sample_db, settings_env(storage, tmp_path))
    server.executable = venvs["api"] / "bin" / "exportd"
    server.start()
    try:
        with server.client() as client:
            answer = client.post("/export", json=SEED_BODY, headers=server.headers())
            assert answer.status_code == 200, answer.text + server.log()
            url = answer.json()["url"]
            fetched = client.get(url) if storage is None else httpx.get(url, timeout=60)
    finally:
        server.stop()
    assert fetched.status_code == 200, fetched.text
    assert fetched.content[:2] == b"PK"  # an XLSX (zip) file


def operator_env(
    workdir: Path, kubeconfig: Path, setup: ExportSetup, storage: StorageConfig | None
) -> dict[str, str]:
    return {
        "PATH": os.defpath,
        "HOME": str(workdir),
        "KUBECONFIG": str(kubeconfig),
        "EXPORTD_LIVENESS_PORT": str(free_port()),
        "EXPORTD_DATA_DIR": str(setup.data_dir),
        "EXPORTD_CATALOG_PATH": str(setup.catalog_path),
        "EXPORTD_SIGNING_KEY": setup.signing_key,
        "EXPORTD_PUBLIC_URL": setup.public_url,
        "EXPORTD_EXPORTER_ENV_CONFIG_MAP": EXPORTER_CONFIG_MAP,
        "EXPORTD_EXPORTER_ENV_SECRET": EXPORTER_SECRET,
        "EXPORTD_EXPORTER_CATALOG_CONFIG_MAP": CATALOG_CONFIG_MAP,
        "EXPORTD_RESYNC_SECONDS": "2",
        **settings_env(storage, workdir),
    }


@pytest.mark.anyio
async def test_operator_and_exporter_images_complete_an_export_with_each_storage_kind(
    venvs: dict[str, Path], storage: StorageConfig | None, tmp_path: Path, sample_db: Path
) -> None:
    """The operator image's entrypoint (its own process and venv) reconciles an ExportRequest;
    its Job runs the exporter image's entrypoint from that image's venv; the request succeeds
    with a link to the file, which is in the storage the settings name."""
    storage_vars = settings_env(storage, tmp_path)
    setup = ExportSetup(
        tmp_path / "data", write_catalog(tmp_path / "catalog"), sample_db, extra_env=storage_vars
    )
    exporter_python = str(venvs["exporter"] / "bin" / "python")
    async with local_cluster(
        tmp_path, sample_db, setup=setup, exporter_python=exporter_python
    ) as cluster:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
        log = (tmp_path / "operator.log").open("wb")
        operator = await asyncio.create_subprocess_exec(
            str(venvs["operator"] / "bin" / "python"),
            "-m",
            "exportd.operator",
            env=operator_env(tmp_path, kubeconfig, setup, storage),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            await cluster.create_request("parity", {**SEED_BODY, "fileName": "parity.csv"})
            done = cluster.until(
                lambda: cluster.phase("parity") in ("Succeeded", "Failed") or operator.returncode
            )
            await asyncio.wait_for(done, 120)
        finally:
            if operator.returncode is None:
                operator.terminate()
            await operator.wait()
            log.close()
        body = cluster.api.current(REQUESTS, NAMESPACE, "parity")
        output = (tmp_path / "operator.log").read_text(errors="replace")[-3000:]
        assert body is not None
        status: dict[str, Any] = body.get("status") or {}
        assert status.get("phase") == "Succeeded", json.dumps(status) + output
        assert status["url"] and status["objectKey"].startswith("exports/parity/")
        attempts = cluster.kubelet.attempts
        assert [a.exit_code for a in attempts] == [0], [a.stderr[-2000:] for a in attempts]
        if storage is None:
            fetched = await download(cluster, status["url"])
            assert fetched.status_code == 200
    if storage is not None:
        stored = storage_from_settings(CommonSettings(storage=storage, data_dir=tmp_path))
        assert stored.exists(status["objectKey"])
