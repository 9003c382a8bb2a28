"""Pure helpers of the API edge: field names in 422s, Content-Disposition, exporter env."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from exportd.api.problems import field_of, problem_response
from exportd.api.routes.files import content_disposition
from exportd.contract.errors import FieldError
from exportd.runner.child import exporter_env
from exportd.settings import ApiSettings, ExporterSettings, SourceConfig


@pytest.mark.parametrize(
    ("loc", "message", "field"),
    [
        (("body", "variables", "x"), "bad", "variables.x"),
        (("body", "fileName"), "bad", "fileName"),
        (("body", "fileName", "function-after[_check_file_name, str]"), "bad", "fileName"),
        (("query", "limit"), "bad", "limit"),
        (("body",), "Value error, email is required when returnType is email", "email"),
        (("body",), "Value error, fileName extension .csv does not match", "fileName"),
        (("body", 12), "JSON decode error", "12"),
        (("body",), "Field required", "body"),
    ],
)
def test_validation_locations_become_wire_field_names(
    loc: tuple[object, ...], message: str, field: str
) -> None:
    """A pydantic location is reported as the client wrote the field (dotted, camelCase)."""
    assert field_of(loc, message) == field


def test_problem_response_is_rfc9457_with_field_pointers() -> None:
    """problem+json with type/title/status/detail, and each field error with a JSON pointer."""
    response = problem_response(
        422, "invalid", reason="InvalidInput", errors=[FieldError("variables.x", "too big")]
    )
    assert response.media_type == "application/problem+json"
    body = response.body.decode()
    assert '"title":"Unprocessable Content"' in body or '"title":"Unprocessable Entity"' in body
    assert '"pointer":"/variables/x"' in body and '"field":"variables.x"' in body


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("myexport.xlsx", 'attachment; filename="myexport.xlsx"'),
        ("Grüße.csv", "attachment; filename=\"Gr__e.csv\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe.csv"),
        ('a"b.csv', "attachment; filename=\"a_b.csv\"; filename*=UTF-8''a%22b.csv"),
    ],
)
def test_content_disposition_follows_rfc6266(name: str, header: str) -> None:
    """ASCII names as a quoted filename; others get an ASCII fallback plus filename*."""
    assert content_disposition(name) == header


def test_exporter_env_round_trips_the_shared_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's environment, read back by ExporterSettings, gives the API's data dir,
    catalog, sources (secrets included) and storage: the exporter sees what the API sees."""
    api = ApiSettings(
        data_dir=tmp_path / "data",
        catalog_path=tmp_path / "catalog.yaml",
        signing_key="k" * 40,
        jwt_secret="never-for-the-exporter",
        sources={
            "sample": SourceConfig(kind="duckdb", path=tmp_path / "s.duckdb"),
            "pg": SourceConfig(kind="postgres", dsn=SecretStr("postgresql://u:p@127.0.0.1/t")),
        },
    )
    env = exporter_env(api)
    assert "EXPORTD_JWT_SECRET" not in env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child = ExporterSettings()
    assert child.data_dir == api.data_dir
    assert child.catalog_path == api.catalog_path
    assert child.storage == api.storage
    assert child.sources["pg"].dsn is not None
    assert child.sources["pg"].dsn.get_secret_value() == "postgresql://u:p@127.0.0.1/t"
    assert child.sources["sample"].path == tmp_path / "s.duckdb"
    assert child.secret("signing_key") == "k" * 40
