"""Images, compose stack, workflows: linted by their own tools, and read for what linters miss.

No Docker engine runs here, so the Dockerfiles are checked by reading: multi-stage, a pinned slim
base, only the extras each image needs, a numeric non-root user, no installer in the final stage,
OCI labels, a health check where one fits. The build steps all three share
(scripts/image-build.sh) run with stub commands that log what they would do. hadolint, actionlint
and docker-compose come from the `test` extra and Debian (scripts/lint-deploy.sh installs them);
a missing one fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.images import IMAGES

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
DOCKERFILES = {name: (image.dockerfile, image.extras) for name, image in IMAGES.items()}
BUILD_SCRIPT_PATH = "scripts/image-build.sh"
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


def build_script_runs(text: str) -> list[list[str]]:
    """The arguments of each ``image-build.sh`` a RUN calls, each RUN checked to bind-mount it
    from the build context (never COPY it: no layer holds the script)."""
    runs = []
    for line in instructions(text):
        if line.startswith("RUN ") and "image-build.sh" in line:
            assert (
                f"--mount=type=bind,source={BUILD_SCRIPT_PATH},target=/tmp/image-build.sh" in line
            )
            runs.append(line.split("sh /tmp/image-build.sh", 1)[1].split())
    return runs


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_installs_only_its_extras_and_drops_pip_through_the_shared_script(
    image: str,
) -> None:
    path = DOCKERFILES[image][0]
    text = path.read_text()
    runtime = final_stage(text)
    build = text[: len(text) - len(runtime)]
    # The install set is the image's extras file (read by the image parity test too).
    extras_file = IMAGES[image].extras_file.relative_to(ROOT)
    assert f"--mount=type=bind,source={extras_file},target=/tmp/extras.txt" in build
    assert build_script_runs(build) == [["venv", "/tmp/extras.txt"]]
    home = ["/var/lib/exportd"] if image == "api" else []
    assert build_script_runs(runtime) == [["runtime", *home]]
    # Installing and removing happen in the script only; the final stage installs nothing.
    assert not [line for line in instructions(text) if PIP_INSTALL.search(line)]
    assert not [line for line in instructions(runtime) if "apt-get" in line]
    assert "COPY scripts" not in text


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_runs_as_a_numeric_non_root_user(image: str) -> None:
    runtime = instructions(final_stage(DOCKERFILES[image][0].read_text()))
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users == ["10001:10001"]  # the id image-build.sh gives its user (checked below)


def run_build_script(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """image-build.sh with every command it runs replaced by a stub that logs its arguments
    (and PIP_NO_CACHE_DIR), so what each step would do in the image is read, not done."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    for name in ("python", "groupadd", "useradd", "install"):
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\necho "{name} $* [cache=${{PIP_NO_CACHE_DIR:-}}]" >> "{log}"\n')
        stub.chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin"}
    proc = subprocess.run(
        ["/bin/sh", str(ROOT / BUILD_SCRIPT_PATH), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    calls = log.read_text() if log.exists() else ""
    log.unlink(missing_ok=True)
    return proc, calls


def test_build_script_venv_has_no_pip_and_holds_only_the_extras(tmp_path: Path) -> None:
    extras = tmp_path / "extras.txt"
    extras.write_text("# the install set\napi,operator\n")
    proc, calls = run_build_script(tmp_path, "venv", str(extras))
    assert proc.returncode == 0, proc.stderr
    assert calls.splitlines() == [
        "python -m venv --without-pip /opt/exportd [cache=1]",
        # pip outside the venv installs into it: the venv copied to the final stage holds no pip.
        "python -m pip --python /opt/exportd/bin/python install .[api,operator] [cache=1]",
    ]


def test_build_script_runtime_drops_installers_and_adds_user_10001(tmp_path: Path) -> None:
    proc, calls = run_build_script(tmp_path, "runtime")
    assert proc.returncode == 0, proc.stderr
    uninstall, groupadd, useradd = calls.splitlines()
    assert uninstall.startswith("python -m pip uninstall --yes --no-cache-dir pip setuptools wheel")
    assert groupadd.startswith("groupadd --system --gid 10001 exportd")
    assert useradd.startswith(
        "useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home "
        "--shell /usr/sbin/nologin exportd"
    )
    proc, calls = run_build_script(tmp_path, "runtime", "/var/lib/exportd")
    assert proc.returncode == 0, proc.stderr
    *_, useradd, install = calls.splitlines()
    assert "--home-dir /var/lib/exportd --no-create-home" in useradd
    assert install.startswith("install -d -o 10001 -g 10001 -m 0750 /var/lib/exportd")


@pytest.mark.parametrize(
    "args", [[], ["venv"], ["venv", ""], ["venv", "no-such-file"], ["build", "api"]]
)
def test_build_script_refuses_bad_arguments_before_running_anything(
    tmp_path: Path, args: list[str]
) -> None:
    proc, calls = run_build_script(tmp_path, *args)
    assert proc.returncode == 2
    assert calls == ""


def test_build_script_refuses_an_extras_file_that_is_not_a_list_of_extras(
    tmp_path: Path,
) -> None:
    """An extras file holding anything but comma-separated extra names installs nothing."""
    extras = tmp_path / "extras.txt"
    extras.write_text("api] [x\n")
    proc, calls = run_build_script(tmp_path, "venv", str(extras))
    assert proc.returncode == 2
    assert calls == ""


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
        f"!{BUILD_SCRIPT_PATH}",
        *(f"!{image.extras_file.relative_to(ROOT)}" for image in IMAGES.values()),
    }
    dockerfiles = "\n".join(p.read_text() for p, _ in DOCKERFILES.values())
    copied = re.findall(r"^COPY (?!--from)(\S+)", dockerfiles, re.MULTILINE)
    mounted = re.findall(r"--mount=type=bind,source=([^,\s]+)", dockerfiles)
    for path in copied + mounted:
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


def use_compose_environment(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service's environment as this process's, secret files mapped to the repo copies."""
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


def test_compose_settings_are_accepted_by_exportd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's environment (secret files mapped to the repo copies) is valid ApiSettings."""
    from exportd.contract.catalog import Catalog
    from exportd.settings import ApiSettings

    proc = run(tool("docker-compose"), *COMPOSE_VARIANTS["postgres-state"], "config")
    use_compose_environment(
        yaml.safe_load(proc.stdout)["services"]["api"]["environment"], tmp_path, monkeypatch
    )
    settings = ApiSettings()
    assert settings.sources["warehouse"].resolved_password() == "exportd-reader-dev"
    assert settings.state_db_url is not None and "exportd_state" in settings.state_db_url
    catalog = Catalog.load(settings.resolved_catalog_path)
    assert {catalog.get(t).source for t in ("userExport", "warehouseUsersByTier")} == {
        "sample",
        "warehouse",
    }
    assert set(settings.sources) >= {catalog.get(t).source for t in ("shopMenuCategories",)}


# ---- the compose databases get the sample data from exportd.sample.sampledb
# ----------------------------


def test_compose_loads_the_sample_data_with_exportd_before_the_api_starts(
    compose_config: dict[str, Any],
) -> None:
    """No second copy of the data: a one-shot service of the API image runs `load-sample`."""
    services = compose_config["services"]
    seed = services["sample-data"]
    assert seed["build"]["dockerfile"] == "api/Dockerfile"
    assert seed["image"] == services["api"]["image"]
    script = " ".join(seed["entrypoint"] + seed["command"])
    assert "exportd load-sample warehouse &&" in script
    assert script.endswith("exportd load-sample shop --only menus")
    assert seed["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "mariadb": {"condition": "service_healthy"},
    }
    assert services["api"]["depends_on"]["sample-data"] == {
        "condition": "service_completed_successfully"
    }
    assert seed["restart"] == "no" and seed["read_only"] is True
    assert seed["cap_drop"] == ["ALL"] and "no-new-privileges:true" in seed["security_opt"]
    assert not list((ROOT / "deploy" / "compose").rglob("*.sql"))
    for name in ("postgres", "mariadb"):
        mounts = " ".join(str(v) for v in services[name].get("volumes", []))
        assert ".sql" not in mounts, name


def test_compose_sample_data_fills_the_api_sources_with_the_owner_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same servers and databases as the API reads, as the accounts that own them (the API's
    PostgreSQL account may only read). That this reader may read what the service loads is
    tested in tests/unit/test_sampledb_load.py, beside the loader."""
    from exportd.exporter.sources import mysql, postgres
    from exportd.settings import ApiSettings, ExporterSettings

    proc = run(tool("docker-compose"), *COMPOSE_VARIANTS["embedded"], "config")
    services = yaml.safe_load(proc.stdout)["services"]
    use_compose_environment(services["api"]["environment"], tmp_path, monkeypatch)
    api = ApiSettings().sources
    use_compose_environment(services["sample-data"]["environment"], tmp_path, monkeypatch)
    seed = ExporterSettings().sources

    pg_api = postgres.connection_arguments(api["warehouse"])
    pg_seed = postgres.connection_arguments(seed["warehouse"])
    assert (pg_seed["host"], pg_seed["port"], pg_seed["dbname"]) == (
        pg_api["host"],
        pg_api["port"],
        pg_api["dbname"],
    )
    pg_env = services["postgres"]["environment"]
    assert pg_seed["user"] == pg_env["POSTGRES_USER"] and pg_seed["dbname"] == pg_env["POSTGRES_DB"]
    assert pg_seed["password"] == "exportd-postgres-dev"  # the pg_password secret

    my_api = mysql.connection_arguments(api["shop"])
    my_seed = mysql.connection_arguments(seed["shop"])
    for key in ("host", "port", "user", "database", "password"):
        assert my_seed[key] == my_api[key], key
    assert my_seed["user"] == services["mariadb"]["environment"]["MARIADB_USER"]
