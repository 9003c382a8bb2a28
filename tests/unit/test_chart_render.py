"""The Helm chart, rendered with its default values and with every option on (ci/full-values.yaml).

Checks what a cluster admission chain and a security review would: every object is valid against
the Kubernetes schemas, every pod runs restricted, RBAC names exact verbs on exact resources,
images follow the tag values, the CRD is the repository's, and every ``EXPORTD_*`` variable the
chart sets is one the exportd settings classes accept. helm comes from scripts/fetch-kube-tools.sh
(it fails loudly when it cannot be fetched).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.specs import seed_spec

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "exportd"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
KUBERNETES_VERSION = "1.35"  # the kubectl/helm client version of fetch-kube-tools.sh
NAMESPACE = "exports"
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# Custom resources of operators the chart integrates with; kubernetes-validate ships no schema.
NO_SCHEMA_KINDS = {"ServiceMonitor"}


@pytest.fixture(scope="module")
def helm() -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-kube-tools.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return Path(out.strip()) / "helm"


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(helm), "template", "exportd", str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def default_objects(helm: Path) -> list[dict[str, Any]]:
    return render(helm, "--include-crds")


@pytest.fixture(scope="module")
def full_objects(helm: Path) -> list[dict[str, Any]]:
    return render(helm, "--include-crds", "-f", str(FULL_VALUES))


@pytest.fixture(params=["default", "full"])
def objects(
    request: pytest.FixtureRequest,
    default_objects: list[dict[str, Any]],
    full_objects: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    return default_objects if request.param == "default" else full_objects


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {obj["kind"] for obj in objects}


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    found = [
        obj
        for obj in objects
        if obj["kind"] == kind and obj["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(found) == 1, f"{kind} *{name_suffix}: {len(found)} found"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        spec: dict[str, Any] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    spec = obj["spec"]["template"]["spec"]
    return spec


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<from>") for e in container.get("env", [])}


# ---- lint and schema ------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], ["-f", str(FULL_VALUES)]], ids=["default", "full"])
def test_helm_lint_strict_is_clean(helm: Path, values: list[str]) -> None:
    proc = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), *values],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rendered_object_is_valid_against_the_kubernetes_schema(
    objects: list[dict[str, Any]],
) -> None:
    """Strict schemas (no unknown fields); only third-party CRs without a schema are skipped."""
    skipped = set()
    for obj in objects:
        if obj["kind"] in NO_SCHEMA_KINDS:
            skipped.add(obj["kind"])
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert skipped <= NO_SCHEMA_KINDS


def test_the_service_monitors_select_existing_service_ports(
    full_objects: list[dict[str, Any]],
) -> None:
    """ServiceMonitor has no shipped schema: check that it points at a real Service port."""
    services = [obj for obj in full_objects if obj["kind"] == "Service"]
    monitors = [obj for obj in full_objects if obj["kind"] == "ServiceMonitor"]
    assert len(monitors) == 2
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selector = monitor["spec"]["selector"]["matchLabels"]
        matching = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matching) == 1
        port_names = {p["name"] for p in matching[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"


def test_values_schema_refuses_unknown_keys_and_bad_values(helm: Path) -> None:
    for bad in ["api.replicaz=3", "api.backend=lambda", "sources.Bad-Name.kind=postgres"]:
        proc = subprocess.run(
            [str(helm), "template", "x", str(CHART), "--set", bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0, bad
        assert "schema" in proc.stderr or "does not match" in proc.stderr, proc.stderr


def refusal(helm: Path, setting: str) -> str:
    """helm's error output for values the chart must refuse to render."""
    proc = subprocess.run(
        [str(helm), "template", "x", str(CHART), "--set", setting],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0, setting
    return proc.stderr


def test_embedded_backend_refuses_more_than_one_replica(helm: Path) -> None:
    assert "replicaCount=1" in refusal(helm, "api.backend=embedded")


def test_email_needs_an_allow_list_by_default(
    helm: Path, full_objects: list[dict[str, Any]]
) -> None:
    """The chart's default recipient policy is ``domains``: with an SMTP host and no allowed
    domain it refuses to render, naming the value to set; the full values' allow-list reaches
    the API as settings (policy, domains as JSON, daily cap)."""
    stderr = refusal(helm, "delivery.smtp.host=smtp.example.com")
    assert "delivery.recipients.allowedDomains is required" in stderr
    container = pod_spec(one(full_objects, "Deployment", "-api"))["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["EXPORTD_EMAIL_RECIPIENTS"] == "domains"
    assert env["EXPORTD_EMAIL_ALLOWED_DOMAINS"] == '["example.com","corp.example.com"]'
    assert env["EXPORTD_EMAIL_DAILY_CAP_PER_USER"] == "10"


def test_full_values_render_every_optional_part(full_objects: list[dict[str, Any]]) -> None:
    assert {
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "ConfigMap",
        "PersistentVolumeClaim",
        "CronJob",
        "ServiceMonitor",
    } <= kinds(full_objects)
    assert "ClusterRole" not in kinds(full_objects)
    assert "ClusterRoleBinding" not in kinds(full_objects)
    # Secrets are referenced, never created; the one exception is the admission webhook's
    # serving certificate, which the chart generates (with its CA) when none is given.
    created = [o["metadata"]["name"] for o in full_objects if o["kind"] == "Secret"]
    assert all(name.endswith("-operator-webhook-tls") for name in created), created


# ---- the CRD --------------------------------------------------------------------------------


def test_chart_crd_is_byte_identical_to_the_repository_crd() -> None:
    """Fix with `make sync-crd` after changing crds/exportrequest.yaml."""
    source = (ROOT / "crds" / "exportrequest.yaml").read_bytes()
    assert (CHART / "crds" / "exportrequest.yaml").read_bytes() == source
    schedules = (ROOT / "crds" / "exportschedule.yaml").read_bytes()
    assert (CHART / "crds" / "exportschedule.yaml").read_bytes() == schedules


def test_the_rendered_crd_is_the_exportrequest_definition(
    default_objects: list[dict[str, Any]],
) -> None:
    crd = one(default_objects, "CustomResourceDefinition", "exportrequests.exportd.dev")
    assert crd["spec"]["group"] == "exportd.dev"
    assert crd["spec"]["names"]["kind"] == "ExportRequest"
    assert crd["spec"]["scope"] == "Namespaced"
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha1"]


# ---- pod security ---------------------------------------------------------------------------


def assert_restricted(spec: dict[str, Any], where: str) -> None:
    """The restricted Pod Security Standard plus a read-only root with a writable /tmp."""
    pod_sc = spec.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True, where
    assert pod_sc.get("runAsUser", 1) != 0, where
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(flag), f"{where}: {flag}"
    assert "automountServiceAccountToken" in spec, f"{where}: token mount left to the default"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    assert not any("hostPath" in v for v in volumes.values()), where
    for container in containers(spec):
        sc = container.get("securityContext", {})
        name = f"{where}/{container['name']}"
        assert sc.get("allowPrivilegeEscalation") is False, name
        assert not sc.get("privileged"), name
        assert sc.get("readOnlyRootFilesystem") is True, name
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
        assert not sc.get("capabilities", {}).get("add"), name
        assert sc.get("runAsUser", 1) != 0, name
        assert sc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == "RuntimeDefault"
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1, f"{name}: no /tmp mount"
        assert "emptyDir" in volumes[tmp[0]["name"]], f"{name}: /tmp is not an emptyDir"
        assert container.get("resources", {}).get("limits"), f"{name}: no limits"


def test_every_pod_in_the_chart_is_restricted(objects: list[dict[str, Any]]) -> None:
    pods = [obj for obj in objects if obj["kind"] in POD_KINDS]
    assert pods
    for obj in pods:
        assert_restricted(pod_spec(obj), f"{obj['kind']}/{obj['metadata']['name']}")


def test_the_operator_runs_alone_and_is_replaced_not_rolled(
    objects: list[dict[str, Any]],
) -> None:
    operator = one(objects, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    probe = operator["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"


def test_api_probes_use_livez_and_readyz(objects: list[dict[str, Any]]) -> None:
    api = one(objects, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert env_of(api)["EXPORTD_HOST"] == "0.0.0.0"  # noqa: S104 - a container listens on all


# ---- RBAC -----------------------------------------------------------------------------------

EXPECTED_RULES = {
    "-operator": {
        ("exportd.dev", "exportrequests"): {"get", "list", "watch", "patch", "update"}
        | {"create", "delete"},  # the runs of ExportSchedules
        ("exportd.dev", "exportrequests/status"): {"get", "patch", "update"},
        ("exportd.dev", "exportschedules"): {"get", "list", "watch", "patch"},
        ("exportd.dev", "exportschedules/status"): {"get", "patch", "update"},
        ("exportd.dev", "exportschedules/finalizers"): {"update"},
        ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
        ("exportd.dev", "exportrequests/finalizers"): {"update"},
        ("", "events"): {"create", "patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
    },
    "-exporter": {("exportd.dev", "exportrequests/status"): {"get", "patch"}},
    "-api": {
        ("exportd.dev", "exportrequests"): {"create", "get", "list", "watch", "patch", "delete"}
    },
    "-backup": {("exportd.dev", "exportrequests"): {"get", "list"}},
}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule or rule["resourceNames"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    return rules


def test_rbac_has_no_wildcards(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in obj["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{obj['metadata']['name']}: {field}"


def test_each_role_grants_exactly_what_its_component_needs(
    full_objects: list[dict[str, Any]],
) -> None:
    roles = {obj["metadata"]["name"]: obj for obj in full_objects if obj["kind"] == "Role"}
    assert len(roles) == len(EXPECTED_RULES)
    for suffix, expected in EXPECTED_RULES.items():
        assert rules_of(one(full_objects, "Role", suffix)) == expected, suffix


def test_each_role_is_bound_to_its_own_service_account_only(
    full_objects: list[dict[str, Any]],
) -> None:
    for binding in (obj for obj in full_objects if obj["kind"] == "RoleBinding"):
        name = binding["metadata"]["name"]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": name,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}
        ]


def test_service_accounts_do_not_mount_tokens_by_default(objects: list[dict[str, Any]]) -> None:
    for account in (obj for obj in objects if obj["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


# ---- images ---------------------------------------------------------------------------------


def image_refs(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Every image the release runs, the export Jobs' image (set on the operator) included."""
    refs: dict[str, str] = {}
    for obj in objects:
        if obj["kind"] not in POD_KINDS:
            continue
        for container in containers(pod_spec(obj)):
            refs[f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"] = container[
                "image"
            ]
            exporter_image = env_of(container).get("EXPORTD_EXPORTER_IMAGE")
            if exporter_image:
                refs["exporter-jobs"] = exporter_image
    return refs


def test_one_tag_value_moves_every_image(helm: Path) -> None:
    before = image_refs(render(helm, "-f", str(FULL_VALUES), "--set", "global.imageTag=1.0.0"))
    after = image_refs(render(helm, "-f", str(FULL_VALUES), "--set", "global.imageTag=2.0.0"))
    assert len(before) >= 4 and before.keys() == after.keys()
    for where, ref in before.items():
        assert ref.endswith(":1.0.0"), where
        assert after[where] == ref.removesuffix(":1.0.0") + ":2.0.0", where


def test_default_images_use_the_chart_app_version(default_objects: list[dict[str, Any]]) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    refs = image_refs(default_objects)
    assert {ref.rsplit(":", 1)[1] for ref in refs.values()} == {app_version}
    assert {ref.rsplit(":", 1)[0] for ref in refs.values()} == {
        "ghcr.io/exportd/api",
        "ghcr.io/exportd/operator",
        "ghcr.io/exportd/exporter",
    }


@pytest.mark.parametrize("component", ["api", "operator", "exporter"])
def test_a_component_tag_or_digest_moves_only_that_image(helm: Path, component: str) -> None:
    base = image_refs(render(helm, "-f", str(FULL_VALUES)))
    tagged = image_refs(render(helm, "-f", str(FULL_VALUES), "--set", f"{component}.image.tag=t9"))
    digest = "sha256:" + "ab" * 32
    pinned = image_refs(
        render(helm, "-f", str(FULL_VALUES), "--set", f"{component}.image.digest={digest}")
    )
    for where, ref in base.items():
        repo = ref.rsplit(":", 1)[0]
        if repo.endswith(f"/{component}"):
            assert tagged[where] == f"{repo}:t9", where
            assert pinned[where] == f"{repo}@{digest}", where
        else:
            assert tagged[where] == ref == pinned[where], where


# ---- configuration handed to exportd ---------------------------------------------------------


def test_catalog_configmap_holds_the_catalog_text_verbatim(
    full_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """A variable named `y` survives (as a values map key YAML 1.1 would make it `true`)."""
    from exportd.contract.catalog import Catalog

    content = yaml.safe_load(FULL_VALUES.read_text())["catalog"]["content"]
    rendered = one(full_objects, "ConfigMap", "-catalog")["data"]["catalog.yaml"]
    assert rendered == content
    path = tmp_path / "catalog.yaml"
    path.write_text(rendered)
    catalog = Catalog.load(path)
    assert set(catalog.get("usersByTier").variables) == {"x", "y"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No EXPORTD_* variable of the test run leaks into the settings under test."""
    for name in [key for key in os.environ if key.startswith("EXPORTD_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def settings_env(container_env: list[dict[str, Any]], tmp_path: Path) -> dict[str, str]:
    """The container's EXPORTD_* variables, secret files replaced by local stand-ins."""
    env: dict[str, str] = {}
    for entry in container_env:
        name = entry["name"]
        if not name.startswith("EXPORTD_"):
            continue
        if "valueFrom" in entry:
            env[name] = "from-a-secret"
            continue
        value = entry["value"]
        if value.startswith("/run/secrets/exportd/"):
            stand_in = tmp_path / Path(value).name
            stand_in.write_text("stand-in-secret\n")
            value = str(stand_in)
        env[name] = value
    return env


def assert_known_to(settings_cls: type[Any], env: dict[str, str]) -> None:
    for name in env:
        top = name.removeprefix("EXPORTD_").split("__")[0].lower()
        if "__" not in name:
            top = top.removesuffix("_file")
        assert top in settings_cls.model_fields, f"{name}: no {settings_cls.__name__}.{top}"


@pytest.mark.parametrize(
    ("kind", "suffix", "settings_name"),
    [
        ("Deployment", "-api", "ApiSettings"),
        ("Deployment", "-operator", "OperatorSettings"),
        ("CronJob", "-backup", "ApiSettings"),
    ],
)
def test_exportd_accepts_every_variable_the_chart_sets(
    full_objects: list[dict[str, Any]],
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    kind: str,
    suffix: str,
    settings_name: str,
) -> None:
    """Names are real settings fields and values validate (nested models forbid extras)."""
    import exportd.settings

    settings_cls = getattr(exportd.settings, settings_name)
    container = pod_spec(one(full_objects, kind, suffix))["containers"][0]
    env = settings_env(container["env"], tmp_path)
    env["EXPORTD_DATA_DIR"] = str(tmp_path / "data")
    env.pop("EXPORTD_CATALOG_PATH", None)  # a mounted file; the catalog test covers it
    assert_known_to(settings_cls, env)
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = settings_cls()
    assert settings.storage.kind == "s3"
    assert settings.sources["warehouse"].kind == "postgres"
    assert settings.sources["warehouse"].dsn is not None


def test_exporter_environment_configmap_is_valid_exporter_settings(
    full_objects: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """The export pods' variables, with the catalog and secret-file mounts the operator adds
    replaced by local copies: the catalog loads and `_FILE` secrets resolve."""
    from exportd.contract.catalog import Catalog
    from exportd.settings import ExporterSettings

    data = one(full_objects, "ConfigMap", "-exporter-env")["data"]
    catalog_dir, secrets_dir = tmp_path / "catalog", tmp_path / "secrets"
    catalog_dir.mkdir()
    secrets_dir.mkdir()
    (catalog_dir / "catalog.yaml").write_text(
        one(full_objects, "ConfigMap", "-catalog")["data"]["catalog.yaml"]
    )
    env: dict[str, str] = {}
    for name, value in data.items():
        if value.startswith("/etc/exportd/secrets/"):
            (secrets_dir / Path(value).name).write_text(f"{Path(value).name}-value\n")
        env[name] = value.replace("/etc/exportd/catalog", str(catalog_dir)).replace(
            "/etc/exportd/secrets", str(secrets_dir)
        )
    env["EXPORTD_DATA_DIR"] = str(tmp_path / "data")
    assert_known_to(ExporterSettings, env)
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = ExporterSettings()
    assert settings.smtp.host == "smtp.example.com"
    assert settings.storage.bucket == "exportd-files"
    assert settings.sources["warehouse"].resolved_password() == "warehouse-password-value"
    assert settings.smtp.resolved_password() == "smtp-password-value"
    assert settings.secret("signing_key") == "signing-key-value"
    assert set(Catalog.load(settings.resolved_catalog_path).types) == {
        "usersByTier",
        "menusByMuscle",
    }


# ---- the export Jobs the operator will create -------------------------------------------------


def operator_planned_job(
    objects: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The Job the operator plans when configured exactly as the chart configures it."""

    from exportd.operator.jobs import JobTemplate, RequestRef, plan_job
    from exportd.settings import OperatorSettings

    container = pod_spec(one(objects, "Deployment", "-operator"))["containers"][0]
    env = settings_env(container["env"], tmp_path)
    env["EXPORTD_DATA_DIR"] = str(tmp_path / "data")
    env.pop("EXPORTD_CATALOG_PATH", None)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = seed_spec(id="exp-chart-check", file_name="users.csv")
    ref = RequestRef(namespace=NAMESPACE, name=spec.id, uid="0f1e2d3c")
    template = JobTemplate.from_settings(OperatorSettings())
    return plan_job(spec, ref, template, deadline_seconds=600)


def test_planned_export_jobs_are_valid_restricted_and_use_the_chart_account_and_image(
    objects: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    job = operator_planned_job(objects, tmp_path, clean_env)
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    spec = pod_spec(job)
    assert_restricted(spec, "planned export Job")
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    assert spec["serviceAccountName"] in accounts
    assert spec["serviceAccountName"].endswith("-exporter")
    assert spec["containers"][0]["image"] == image_refs(objects)["exporter-jobs"]
    config_maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    refs = {
        e["configMapRef"]["name"] for e in spec["containers"][0]["envFrom"] if "configMapRef" in e
    }
    assert refs == {"exportd-exporter-env"}
    assert refs <= config_maps


def test_export_pods_carry_the_configured_metadata_and_scheduling(
    full_objects: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """exporter.pod of the full values reaches the planned Job's pod as a pod spec has it
    (and the Job still validates strictly, above); the operator's own labels stay."""
    values = yaml.safe_load(FULL_VALUES.read_text())["exporter"]["pod"]
    job = operator_planned_job(full_objects, tmp_path, clean_env)
    metadata, spec = job["spec"]["template"]["metadata"], pod_spec(job)
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    assert metadata["annotations"] == values["annotations"]
    assert metadata["labels"]["team"] == "data"
    assert metadata["labels"]["exportd.dev/export"] == "exp-chart-check"
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert spec["tolerations"] == values["tolerations"]
    assert spec["affinity"] == values["affinity"]
    assert spec["priorityClassName"] == "batch-low"
    assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]


def test_export_pods_fall_under_the_exporter_network_policy(
    objects: list[dict[str, Any]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Exporter pods: no ingress; egress only DNS plus the configured ports; others untouched."""
    labels = pod_spec_labels(operator_planned_job(objects, tmp_path, clean_env))
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    selecting = [p for p in policies if selects(p, labels)]
    assert [p["metadata"]["name"] for p in selecting] == ["exportd-exporter"]
    policy = selecting[0]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == []
    dns, *others = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    ports = {p["port"] for rule in others for p in rule["ports"]}
    assert ports <= {5432, 3306, 443, 6443, 587, 465}


def pod_spec_labels(job: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = job["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return bool(wanted) and wanted.items() <= labels.items()


def test_internal_services_are_not_reachable_from_other_namespaces(
    objects: list[dict[str, Any]],
) -> None:
    """Only the ingress controller's and the monitoring namespaces get in, on named ports."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]
    allowed = [values["ingressNamespaceSelector"], values["monitoringNamespaceSelector"]]
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:
                # The apiserver calling the admission webhook: no selector can name it.
                assert rule["ports"] == [{"port": "webhook", "protocol": "TCP"}], rule
                continue
            assert rule["from"], policy["metadata"]["name"]
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    assert peer["namespaceSelector"] in allowed
                else:
                    assert peer == {"podSelector": {}}
            assert all("port" in p for p in rule["ports"])


def test_ingress_terminates_tls_with_hsts(full_objects: list[dict[str, Any]]) -> None:
    ingress = one(full_objects, "Ingress", "-api")
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert ingress["spec"]["tls"] == [{"secretName": "exports-tls", "hosts": hosts}]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.org/hsts"] == "true"
    assert annotations["nginx.org/hsts-max-age"] == "31536000"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"


def test_dashboards_dropped_into_files_become_a_sidecar_configmap(
    helm: Path, tmp_path: Path
) -> None:
    """Every files/dashboards/*.json lands verbatim in one ConfigMap with the sidecar label."""
    chart = tmp_path / "exportd"
    shutil.copytree(CHART, chart)
    dashboard = '{"title": "exportd", "panels": []}'
    (chart / "files" / "dashboards" / "exportd-overview.json").write_text(dashboard)
    proc = subprocess.run(
        [str(helm), "template", "exportd", str(chart), "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    config_map = one(objects, "ConfigMap", "-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"]["exportd-overview.json"] == dashboard
    shipped = {p.name for p in (CHART / "files" / "dashboards").glob("*.json")}
    assert set(config_map["data"]) == shipped | {"exportd-overview.json"}
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)


def test_the_admission_webhook_is_wired_with_a_generated_certificate_and_can_be_off(
    helm: Path, default_objects: list[dict[str, Any]]
) -> None:
    """By default the apiserver is pointed at the operator's Service (HTTPS, /validate-request,
    CREATE of exportrequests in the release namespace) with the CA of the serving certificate
    the chart generated for that Service, which the operator mounts and serves; the certificate
    names the Service. ``operator.webhook.enabled=false`` renders none of it."""
    import base64

    from cryptography import x509

    config = one(default_objects, "ValidatingWebhookConfiguration", NAMESPACE)
    [hook] = config["webhooks"]
    service = hook["clientConfig"]["service"]
    assert (service["path"], service["port"]) == ("/validate-request", 443)
    assert hook["rules"][0]["resources"] == ["exportrequests"]
    assert hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
    secret = one(default_objects, "Secret", "-operator-webhook-tls")
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{service['name']}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    operator = one(default_objects, "Deployment", "-operator")
    [container] = pod_spec(operator)["containers"]
    env = env_of(container)
    assert env["EXPORTD_WEBHOOK_CERT_PATH"] == "/etc/exportd/webhook/tls.crt"
    volumes = {v["name"]: v for v in pod_spec(operator)["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == secret["metadata"]["name"]
    ports = {
        p["name"]: p["targetPort"]
        for p in one(default_objects, "Service", "-operator")["spec"]["ports"]
    }
    assert ports["webhook"] == "webhook"

    off = render(helm, "--set", "operator.webhook.enabled=false")
    assert "ValidatingWebhookConfiguration" not in kinds(off)
    [container] = pod_spec(one(off, "Deployment", "-operator"))["containers"]
    assert "EXPORTD_WEBHOOK_CERT_PATH" not in env_of(container)
