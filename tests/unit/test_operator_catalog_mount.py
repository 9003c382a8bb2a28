"""Export pods get the catalog and secret files as read-only volumes, planned from settings.

``exporter_catalog_config_map`` mounts that ConfigMap's ``catalog.yaml`` at
/etc/exportd/catalog and points ``EXPORTD_CATALOG_PATH`` at it; ``exporter_secret_files`` mounts
a Secret at /etc/exportd/secrets so ``EXPORTD_*_FILE`` settings read from it. The planned Job is
checked against the Kubernetes schema, and the exporter's settings are built from the planned
container's environment with the mounts replaced by local directories, as the kubelet would
fill them. Pure; no cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from tests.specs import seed_spec

from exportd.contract.catalog import Catalog
from exportd.operator.jobs import JobTemplate, RequestRef, plan_job
from exportd.settings import ExporterSettings, OperatorSettings

REF = RequestRef("exports", "exp-cat", "5b1d7a90-0000-4000-8000-0000000000aa")
SHIPPED_CATALOG = Path(__file__).resolve().parents[2] / "src" / "exportd" / "data" / "catalog.yaml"


def planned(**settings: Any) -> dict[str, Any]:
    spec = seed_spec(id="exp-cat", file_name="users.csv")
    template = JobTemplate.from_settings(OperatorSettings(**settings))
    return plan_job(spec, REF, template, deadline_seconds=600)


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = pod(job)["containers"][0]
    return found


def test_the_catalog_configmap_is_mounted_read_only_and_named_by_catalog_path() -> None:
    job = planned(exporter_catalog_config_map="exportd-catalog")
    volumes = {v["name"]: v for v in pod(job)["volumes"]}
    assert volumes["catalog"] == {
        "name": "catalog",
        "configMap": {
            "name": "exportd-catalog",
            "items": [{"key": "catalog.yaml", "path": "catalog.yaml"}],
        },
    }
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["catalog"] == {
        "name": "catalog",
        "mountPath": "/etc/exportd/catalog",
        "readOnly": True,
    }
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["EXPORTD_CATALOG_PATH"] == "/etc/exportd/catalog/catalog.yaml"
    kubernetes_validate.validate(job, "1.35", strict=True)


def test_the_secret_files_are_mounted_read_only_and_group_readable_only() -> None:
    job = planned(exporter_secret_files="exportd-exporter-files")
    volumes = {v["name"]: v for v in pod(job)["volumes"]}
    assert volumes["secret-files"]["secret"] == {
        "secretName": "exportd-exporter-files",
        "defaultMode": 0o440,  # the pod's fsGroup reads; nobody writes
    }
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["secret-files"] == {
        "name": "secret-files",
        "mountPath": "/etc/exportd/secrets",
        "readOnly": True,
    }
    assert pod(job)["securityContext"]["fsGroup"] == pod(job)["securityContext"]["runAsUser"]
    kubernetes_validate.validate(job, "1.35", strict=True)


def test_without_the_settings_the_job_has_neither_volume_nor_catalog_path() -> None:
    job = planned()
    assert {v["name"] for v in pod(job)["volumes"]} == {"tmp"}
    assert {m["mountPath"] for m in container(job)["volumeMounts"]} == {"/tmp"}
    assert "EXPORTD_CATALOG_PATH" not in {e["name"] for e in container(job)["env"]}


def test_both_volumes_together_keep_distinct_names_and_paths() -> None:
    job = planned(exporter_catalog_config_map="cat", exporter_secret_files="files")
    names = [v["name"] for v in pod(job)["volumes"]]
    paths = [m["mountPath"] for m in container(job)["volumeMounts"]]
    assert len(names) == len(set(names)) == 3
    assert len(paths) == len(set(paths)) == 3
    kubernetes_validate.validate(job, "1.35", strict=True)


def test_operator_reads_both_names_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Helm chart configures the operator with these two variables."""
    for name in [key for key in os.environ if key.startswith("EXPORTD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("EXPORTD_EXPORTER_CATALOG_CONFIG_MAP", "rel-exportd-catalog")
    monkeypatch.setenv("EXPORTD_EXPORTER_SECRET_FILES", "rel-exporter-files")
    template = JobTemplate.from_settings(OperatorSettings())
    assert template.catalog_config_map == "rel-exportd-catalog"
    assert template.secret_files == "rel-exporter-files"


def test_the_exporter_in_the_planned_pod_loads_the_mounted_catalog_and_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planned env, with each mount path mapped to a directory holding what the kubelet
    would project, gives exporter settings that read the catalog and a `_FILE` password."""
    job = planned(exporter_catalog_config_map="cat", exporter_secret_files="files")
    mounted = {
        "/etc/exportd/catalog": tmp_path / "catalog",
        "/etc/exportd/secrets": tmp_path / "secrets",
    }
    for mount in container(job)["volumeMounts"]:
        assert mount["mountPath"] == "/tmp" or mount["mountPath"] in mounted
    mounted["/etc/exportd/catalog"].mkdir()
    (mounted["/etc/exportd/catalog"] / "catalog.yaml").write_text(SHIPPED_CATALOG.read_text())
    mounted["/etc/exportd/secrets"].mkdir()
    (mounted["/etc/exportd/secrets"] / "warehouse-password").write_text("s3cr3t\n")

    for name in [key for key in os.environ if key.startswith("EXPORTD_")]:
        monkeypatch.delenv(name)
    for entry in container(job)["env"]:
        value = entry.get("value")
        if value is None:  # fieldRef (namespace): set by the kubelet
            continue
        for path, local in mounted.items():
            value = value.replace(path, str(local))
        monkeypatch.setenv(entry["name"], value)
    # What an operator puts in the exporter's environment ConfigMap for a source password.
    monkeypatch.setenv("EXPORTD_SOURCES__WAREHOUSE__KIND", "postgres")
    monkeypatch.setenv("EXPORTD_SOURCES__WAREHOUSE__DSN", "postgresql://reader@db/warehouse")
    monkeypatch.setenv(
        "EXPORTD_SOURCES__WAREHOUSE__PASSWORD_FILE",
        str(mounted["/etc/exportd/secrets"] / "warehouse-password"),
    )
    monkeypatch.setenv("EXPORTD_DATA_DIR", str(tmp_path / "data"))

    settings = ExporterSettings()
    assert settings.resolved_catalog_path == mounted["/etc/exportd/catalog"] / "catalog.yaml"
    assert "userExport" in Catalog.load(settings.resolved_catalog_path).types
    assert settings.sources["warehouse"].resolved_password() == "s3cr3t"
