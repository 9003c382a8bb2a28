"""What the chart hands each exportd process, followed through to exportd itself.

The export Jobs' catalog and secret files (planned by the operator code from the operator's
rendered environment), Redis for the API, the operator's /metrics, the API's shutdown grace and
its own HTTPS, the backup CronJob's command (run for real against a local copy of its mounts),
and the Grafana dashboard ConfigMap. Helpers and fixtures come from test_chart_render.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.specs import seed_spec
from tests.unit.test_chart_render import (
    CHART,
    FULL_VALUES,
    KUBERNETES_VERSION,
    clean_env,
    env_of,
    helm,
    one,
    operator_planned_job,
    pod_spec,
    render,
    settings_env,
)

__all__ = ["clean_env", "helm"]  # fixtures shared with test_chart_render
EXPORTD = Path(sys.executable).parent / "exportd"
DASHBOARD = CHART / "files" / "dashboards" / "exportd.json"
CONFIGMAP_LIMIT_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def full(helm: Path) -> list[dict[str, Any]]:
    return render(helm, "-f", str(FULL_VALUES))


@pytest.fixture(scope="module")
def default(helm: Path) -> list[dict[str, Any]]:
    return render(helm)


def container_of(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    found: dict[str, Any] = pod_spec(one(objects, kind, suffix))["containers"][0]
    return found


def volumes_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in spec.get("volumes", [])}


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def projected_items(spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """File name under /run/secrets/exportd -> (Secret, key)."""
    items: dict[str, tuple[str, str]] = {}
    for source in volumes_of(spec)["secrets"]["projected"]["sources"]:
        for item in source["secret"]["items"]:
            items[item["path"]] = (source["secret"]["name"], item["key"])
    return items


def api_settings(container: dict[str, Any], tmp_path: Path, env: pytest.MonkeyPatch) -> Any:
    from exportd.settings import ApiSettings

    values = settings_env(container["env"], tmp_path)
    values["EXPORTD_DATA_DIR"] = str(tmp_path / "data")
    values.pop("EXPORTD_CATALOG_PATH", None)
    for name, value in values.items():
        env.setenv(name, value)
    return ApiSettings()


# ---- export Jobs: catalog and secret files ------------------------------------------------


def test_planned_export_jobs_mount_the_chart_catalog_where_catalog_path_points(
    full: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    job = operator_planned_job(full, tmp_path, clean_env)
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    spec = pod_spec(job)
    container = spec["containers"][0]
    catalog_map = one(full, "ConfigMap", "-catalog")
    assert volumes_of(spec)["catalog"]["configMap"] == {
        "name": catalog_map["metadata"]["name"],
        "items": [{"key": "catalog.yaml", "path": "catalog.yaml"}],
    }
    assert "catalog.yaml" in catalog_map["data"]
    mount = mounts_of(container)["/etc/exportd/catalog"]
    assert mount == {"name": "catalog", "mountPath": "/etc/exportd/catalog", "readOnly": True}
    exporter_env = one(full, "ConfigMap", "-exporter-env")["data"]
    path = "/etc/exportd/catalog/catalog.yaml"
    assert env_of(container)["EXPORTD_CATALOG_PATH"] == exporter_env["EXPORTD_CATALOG_PATH"] == path


def test_planned_export_jobs_mount_the_secret_files_the_exporter_env_names(
    full: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    values = yaml.safe_load(FULL_VALUES.read_text())["exporter"]["secretFiles"]
    job = operator_planned_job(full, tmp_path, clean_env)
    spec = pod_spec(job)
    assert volumes_of(spec)["secret-files"]["secret"]["secretName"] == values["existingSecret"]
    mount = mounts_of(spec["containers"][0])["/etc/exportd/secrets"]
    assert mount["readOnly"] is True and mount["name"] == "secret-files"
    exporter_env = one(full, "ConfigMap", "-exporter-env")["data"]
    for variable, key in values["env"].items():
        assert exporter_env[variable] == f"/etc/exportd/secrets/{key}"


def test_an_existing_catalog_configmap_is_the_one_export_jobs_mount(
    helm: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    objects = render(helm, "-f", str(FULL_VALUES), "--set", "catalog.existingConfigMap=my-cat")
    assert not [o for o in objects if o["metadata"]["name"].endswith("-catalog")]
    job = operator_planned_job(objects, tmp_path, clean_env)
    assert volumes_of(pod_spec(job))["catalog"]["configMap"]["name"] == "my-cat"


def test_without_a_catalog_export_jobs_use_the_image_catalog(
    default: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    job = operator_planned_job(default, tmp_path, clean_env)
    container = pod_spec(job)["containers"][0]
    assert "catalog" not in volumes_of(pod_spec(job))
    assert "secret-files" not in volumes_of(pod_spec(job))
    assert "EXPORTD_CATALOG_PATH" not in env_of(container)
    assert "EXPORTD_CATALOG_PATH" not in one(default, "ConfigMap", "-exporter-env")["data"]


def test_secret_file_variables_without_a_secret_are_refused(helm: Path) -> None:
    proc = subprocess.run(
        [str(helm), "template", "x", str(CHART), "--set",
         "exporter.secretFiles.env.EXPORTD_SMTP__PASSWORD_FILE=smtp-password"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "exporter.secretFiles.existingSecret" in proc.stderr


# ---- Redis --------------------------------------------------------------------------------


def test_redis_url_from_a_secret_reaches_the_api_as_a_file(
    full: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    spec = pod_spec(one(full, "Deployment", "-api"))
    env = env_of(spec["containers"][0])
    assert env["EXPORTD_REDIS_URL_FILE"] == "/run/secrets/exportd/redis-url"
    assert "EXPORTD_REDIS_URL" not in env
    assert projected_items(spec)["redis-url"] == ("exportd-redis", "url")
    settings = api_settings(spec["containers"][0], tmp_path, clean_env)
    assert settings.redis_url.get_secret_value() == "stand-in-secret"
    assert settings.redis_key_prefix == "exportd-prod"


def test_a_plain_redis_url_is_set_directly_and_no_redis_means_no_variable(
    helm: Path, default: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    url = "redis://redis.exports.svc:6379/0"
    objects = render(helm, "--set", f"redis.url={url}")
    container = container_of(objects, "Deployment", "-api")
    assert api_settings(container, tmp_path, clean_env).redis_url.get_secret_value() == url
    assert not [n for n in env_of(container_of(default, "Deployment", "-api")) if "REDIS" in n]


# ---- operator metrics ---------------------------------------------------------------------


def test_operator_serves_metrics_on_a_named_port_scraped_and_allowed(
    full: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    from exportd.settings import OperatorSettings

    container = container_of(full, "Deployment", "-operator")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env_of(container)["EXPORTD_METRICS_PORT"]) == ports["metrics"] == 9090
    assert ports["health"] != ports["metrics"]  # kopf's liveness serves only /healthz
    service = one(full, "Service", "-operator")
    assert {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )
    monitor = one(full, "ServiceMonitor", "-operator")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    policy = one(full, "NetworkPolicy", "-operator")
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert "metrics" in allowed
    for name, value in settings_env(container["env"], tmp_path).items():
        clean_env.setenv(name, value)
    clean_env.setenv("EXPORTD_DATA_DIR", str(tmp_path / "data"))
    clean_env.delenv("EXPORTD_CATALOG_PATH", raising=False)
    assert OperatorSettings().metrics_port == 9090


# ---- API shutdown grace -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [[], ["-f", str(FULL_VALUES)], ["--set", "api.cancelGraceSeconds=120"]],
    ids=["default", "full", "long-grace"],
)
def test_api_pods_outlive_the_drain_and_the_exporter_stop(helm: Path, values: list[str]) -> None:
    """uvicorn drains for cancel_grace + 5 s (exportd serve), then the runner gives exporter
    children cancel_grace s: the kubelet must not SIGKILL before both are done."""
    api = pod_spec(one(render(helm, *values), "Deployment", "-api"))
    cancel = float(env_of(api["containers"][0])["EXPORTD_CANCEL_GRACE_SECONDS"])
    assert api["terminationGracePeriodSeconds"] > (int(cancel) + 5) + cancel


# ---- the API serving HTTPS itself ---------------------------------------------------------


def test_a_tls_secret_makes_the_api_serve_https_with_https_probes(
    helm: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    objects = render(helm, "--set", "api.tls.existingSecret=api-tls")
    spec = pod_spec(one(objects, "Deployment", "-api"))
    container = spec["containers"][0]
    env = env_of(container)
    assert env["EXPORTD_TLS_CERT_FILE"] == "/run/secrets/exportd/tls.crt"
    assert env["EXPORTD_TLS_KEY_FILE"] == "/run/secrets/exportd/tls.key"
    assert projected_items(spec)["tls.crt"] == ("api-tls", "tls.crt")
    assert projected_items(spec)["tls.key"] == ("api-tls", "tls.key")
    assert mounts_of(container)["/run/secrets/exportd"]["readOnly"] is True
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    assert env["EXPORTD_PUBLIC_URL"].startswith("https://")
    assert one(objects, "Service", "-api")["spec"]["ports"][0]["appProtocol"] == "https"
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    settings = api_settings(container, tmp_path, clean_env)
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None


def test_without_a_tls_secret_the_api_speaks_plain_http(default: list[dict[str, Any]]) -> None:
    container = container_of(default, "Deployment", "-api")
    assert "EXPORTD_TLS_CERT_FILE" not in env_of(container)
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert "appProtocol" not in one(default, "Service", "-api")["spec"]["ports"][0]


def test_ingress_and_scrapes_reach_an_https_api_over_https(helm: Path) -> None:
    objects = render(
        helm, "-f", str(FULL_VALUES), "--set", "api.tls.existingSecret=api-tls",
        "--set", "metrics.serviceMonitor.apiTlsConfig.insecureSkipVerify=true",
    )  # fmt: skip
    annotations = one(objects, "Ingress", "-api")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    (endpoint,) = one(objects, "ServiceMonitor", "-api")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}


# ---- backup CronJob -----------------------------------------------------------------------

SQLITE_BACKUP_VALUES = [
    "--set", "api.backend=embedded", "--set", "api.replicaCount=1",
    "--set", "storage.persistence.enabled=true",
    "--set", "backup.enabled=true", "--set", "backup.existingClaim=exportd-backups",
]  # fmt: skip


def test_backup_cronjob_command_is_exportd_backup_into_the_backup_claim(
    full: list[dict[str, Any]],
) -> None:
    from exportd.cli import build_parser

    spec = pod_spec(one(full, "CronJob", "-backup"))
    container = spec["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert args.command == "backup"
    destination = mounts_of(container)[str(args.to)]
    claim = volumes_of(spec)[destination["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == "exportd-backups"
    env = env_of(container)
    assert env["EXPORTD_STATE_DB_URL_FILE"] == "/run/secrets/exportd/state-db-url"
    assert env["EXPORTD_BACKEND"] == "kubernetes" and spec["automountServiceAccountToken"]


def test_rendered_backup_command_backs_up_the_api_sqlite_state(helm: Path, tmp_path: Path) -> None:
    """Embedded backend, SQLite on the files claim: the CronJob mounts the API's claim at its
    data dir. Running the rendered args and env (mounts mapped to local directories) writes
    a backup holding the API's record."""
    from exportd.settings import ApiSettings
    from exportd.store.base import ExportRecord, store_from_settings

    objects = render(helm, *SQLITE_BACKUP_VALUES)
    spec = pod_spec(one(objects, "CronJob", "-backup"))
    container = spec["containers"][0]
    env = env_of(container)
    api = pod_spec(one(objects, "Deployment", "-api"))
    data_mount = mounts_of(container)[env["EXPORTD_DATA_DIR"]]
    assert volumes_of(spec)[data_mount["name"]] == volumes_of(api)["data"] | {
        "name": data_mount["name"]
    }

    local = {"/backup": tmp_path / "backup", env["EXPORTD_DATA_DIR"]: tmp_path / "data"}
    for directory in local.values():
        directory.mkdir()
    record = ExportRecord.new(seed_spec(id="exp-chart-backup", file_name="u.csv"))
    asyncio.run(
        save(store_from_settings(ApiSettings(data_dir=local[env["EXPORTD_DATA_DIR"]])), record)
    )

    def mapped(value: str) -> str:
        for path, directory in local.items():
            value = value.replace(path, str(directory)) if value.startswith(path) else value
        return value

    child_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    child_env |= {name: mapped(value) for name, value in env.items() if name.startswith("EXPORTD_")}
    done = subprocess.run(
        [str(EXPORTD), *(mapped(arg) for arg in container["args"])],
        env=child_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = Path(done.stdout.strip().splitlines()[-1])
    assert written.parent == local["/backup"]
    assert json.loads((written / "manifest.json").read_text())["records"] == 1
    assert "exp-chart-backup" in (written / "exports.jsonl").read_text()


async def save(store: Any, record: Any) -> None:
    await store.open()
    try:
        await store.create(record)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "backup.enabled=true"], "backup.existingClaim"),
        (
            [*SQLITE_BACKUP_VALUES, "--set", "storage.persistence.enabled=false"],
            "secrets.stateDbUrl or storage.persistence",
        ),
    ],
    ids=["no-claim", "embedded-state-unreachable"],
)
def test_a_backup_that_could_not_work_is_refused(
    helm: Path, values: list[str], message: str
) -> None:
    proc = subprocess.run(
        [str(helm), "template", "x", str(CHART), *values],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert message in proc.stderr


# ---- Grafana dashboard --------------------------------------------------------------------


def test_the_shipped_dashboard_renders_into_the_sidecar_configmap(
    default: list[dict[str, Any]],
) -> None:
    config_map = one(default, "ConfigMap", "-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    rendered = config_map["data"]["exportd.json"]
    assert json.loads(rendered) == json.loads(DASHBOARD.read_text())
    assert json.loads(rendered)["title"]
    assert len(yaml.safe_dump(config_map).encode()) < CONFIGMAP_LIMIT_BYTES
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)


def test_the_dashboard_configmap_can_be_switched_off(helm: Path) -> None:
    objects = render(helm, "--set", "grafanaDashboard.enabled=false")
    assert not [o for o in objects if o["metadata"]["name"].endswith("-dashboards")]
