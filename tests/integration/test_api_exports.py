"""The export routes against a started app with a real backend and real exporter children."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import duckdb
import pytest

from exportd.contract.catalog import YAML_BOOLEAN_KEY_HINT
from exportd.settings import SmtpConfig
from tests.integration.conftest import SEED_BODY, Api, auth

pytestmark = pytest.mark.anyio


def fields_of(response: Any) -> set[str]:
    return {error["field"] for error in response.json().get("errors", [])}


async def assert_422_naming(api: Api, body: dict[str, Any], field: str) -> None:
    for path in ("/export", "/v1/exports"):
        response = await api.client.post(path, json=body, headers=auth("alice"))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert field in fields_of(response), response.json()
    assert api.records() == 0


@pytest.mark.parametrize(
    "file_name",
    ["../../etc/passwd", "a/b.xlsx", "a\x00b.xlsx", "x" * 296 + ".xlsx", ".hidden.xlsx", "a.exe"],
)
async def test_unsafe_file_names_are_422_naming_fileName(api: Api, file_name: str) -> None:
    """Path traversal, separators, NUL, 300 characters, leading dot, unknown extension: 422
    naming fileName on both create routes, and no record is created."""
    await assert_422_naming(api, {**SEED_BODY, "fileName": file_name}, "fileName")


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"x": "1; DROP TABLE users", "y": 2}, "variables.x"),
        ({"x": "' OR 1=1 --", "y": 2}, "variables.x"),
        ({"x": 0, "y": 2}, "variables.x"),
        ({"x": 1}, "variables.y"),
        ({"x": 1, "y": 2, "z": 3}, "variables.z"),
    ],
)
async def test_bad_variables_are_422_naming_the_variable(
    api: Api, variables: dict[str, Any], field: str
) -> None:
    """Variables are checked against the catalog schema before any record exists: injection
    text in an integer variable, out of range, missing, or unknown -> 422 naming it."""
    await assert_422_naming(api, {**SEED_BODY, "variables": variables}, field)


@pytest.mark.parametrize(
    ("variables", "field", "rule"),
    [
        ({"x": 9, "y": 2}, "variables.x", "less than or equal to 5"),
        ({"x": 1}, "variables.y", "Field required"),
        ({"x": "a", "y": 2}, "variables.x", "valid integer"),
        ({"x": 1, "true": 2}, "variables.true", YAML_BOOLEAN_KEY_HINT),
    ],
)
async def test_a_bad_variable_problem_names_the_variable_and_the_rule(
    api: Api, variables: dict[str, Any], field: str, rule: str
) -> None:
    """Out of range, missing, wrong type, and the key YAML 1.1 makes of an unquoted y: the
    problem's ``errors[]`` holds the variable's field and a message saying which rule failed."""
    response = await api.client.post(
        "/v1/exports", json={**SEED_BODY, "variables": variables}, headers=auth("alice")
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    messages = {error["field"]: error["message"] for error in problem["errors"]}
    assert rule in messages[field], problem


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "noSuchExport"}, "type"),
        ({"owner": "bob"}, "owner"),
        ({"returnType": "email"}, "email"),
        ({"format": "csv"}, "fileName"),
    ],
)
async def test_bad_request_fields_are_422_naming_them(
    api: Api, change: dict[str, Any], field: str
) -> None:
    """Unknown type, unknown field, email without an address, format contradicting the
    extension."""
    await assert_422_naming(api, {**SEED_BODY, **change}, field)


@pytest.mark.parametrize("settings_overrides", [{"smtp": SmtpConfig(outbox=False)}])
async def test_email_without_smtp_or_outbox_is_422_naming_return_type(api: Api) -> None:
    """No SMTP server and the development outbox turned off: an e-mail request is 422 naming
    returnType at once (no fake success, no export that fails later)."""
    body = {**SEED_BODY, "returnType": "email", "email": "a@example.com"}
    await assert_422_naming(api, body, "returnType")


async def test_injection_text_in_a_string_variable_is_bound_harmlessly(
    api: Api, sample_db: Path
) -> None:
    """A string variable holding ``' OR 1=1 --``: the export succeeds, counts only menus of the
    real muscle (the text matched nothing), and the users table is intact afterwards."""
    body = {
        "type": "menuCategoriesByMuscle",
        "fileName": "m.csv",
        "variables": {"a": "muscle1", "b": "' OR 1=1 --"},
    }
    response = await api.client.post("/export", json=body, headers=auth("alice"))
    assert response.status_code == 200, response.text
    download = await api.client.get(response.json()["url"])
    rows = list(csv.DictReader(io.StringIO(download.text, newline="")))
    got = {row["category"]: int(row["menus"]) for row in rows}
    with duckdb.connect(str(sample_db), read_only=True) as con:
        expected = dict(
            con.execute(
                "SELECT m.category, COUNT(DISTINCT m.id) FROM menus m "
                "JOIN muscle_menus mm ON mm.menu_id = m.id JOIN muscles mu ON mu.id = mm.muscle_id "
                "WHERE mu.name = 'muscle1' GROUP BY m.category"
            ).fetchall()
        )
        assert con.execute("SELECT COUNT(*) FROM users").fetchone() == (100_000,)
    assert got == expected


async def test_another_user_gets_404_for_get_and_delete(api: Api) -> None:
    """Bob cannot read or cancel Alice's export: 404 as for an id that does not exist, and
    Alice's export is untouched."""
    created = await api.client.post("/v1/exports", json=SEED_BODY, headers=auth("alice"))
    export_id = created.json()["id"]
    for method in ("GET", "DELETE"):
        response = await api.client.request(method, f"/v1/exports/{export_id}", headers=auth("bob"))
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        missing = await api.client.request(method, "/v1/exports/exp-nothere", headers=auth("bob"))
        assert missing.status_code == 404
        assert (
            missing.json()["detail"].replace("exp-nothere", export_id)
            == (response.json()["detail"])
        )
    listing = await api.client.get("/v1/exports", headers=auth("bob"))
    assert listing.json()["items"] == []
    mine = await api.client.get(f"/v1/exports/{export_id}", headers=auth("alice"))
    assert mine.status_code == 200
    assert mine.json()["phase"] != "Cancelled"


async def test_create_returns_202_location_and_the_status_then_succeeds(api: Api) -> None:
    """POST /v1/exports -> 202, Location = the status URL; waiting on the export ends
    Succeeded with rows, bytes and a fresh signed url."""
    created = await api.client.post("/v1/exports", json=SEED_BODY, headers=auth("alice"))
    assert created.status_code == 202
    body = created.json()
    assert created.headers["location"] == body["statusUrl"]
    assert body["phase"] in {"Pending", "Queued", "Running"}
    backend = api.app.state.exportd.backend
    status = await backend.wait_until_terminal(body["id"], 120)
    assert status.phase == "Succeeded"
    shown = (await api.client.get(f"/v1/exports/{body['id']}", headers=auth("alice"))).json()
    assert shown["rows"] == 40_000 and shown["bytes"] > 0
    assert shown["url"].startswith("http://testserver/v1/files/exports/")
    download = await api.client.get(shown["url"])
    assert download.status_code == 200
    assert download.content[:2] == b"PK"  # a zip container: XLSX


async def test_listing_is_newest_first_and_paginates(api: Api) -> None:
    """Three exports by Alice, pages of two: newest first, a cursor to the rest, none after."""
    body = {**SEED_BODY, "type": "menuCategoriesByMuscle", "fileName": "m.csv"}
    body["variables"] = {"a": "muscle1", "b": "muscle2"}
    ids = []
    for _ in range(3):
        created = await api.client.post("/v1/exports", json=body, headers=auth("alice"))
        ids.append(created.json()["id"])
    first = (await api.client.get("/v1/exports?limit=2", headers=auth("alice"))).json()
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]
    second = await api.client.get(
        "/v1/exports", params={"limit": 2, "cursor": first["nextCursor"]}, headers=auth("alice")
    )
    assert [item["id"] for item in second.json()["items"]] == ids[:1]
    assert "nextCursor" not in second.json()
    bad = await api.client.get("/v1/exports?cursor=garbage", headers=auth("alice"))
    assert bad.status_code == 422 and fields_of(bad) == {"cursor"}
    for export_id in ids:
        await api.app.state.exportd.backend.wait_until_terminal(export_id, 120)


async def test_tampered_or_expired_download_links_are_403(api: Api) -> None:
    """A link with a changed key, signature or expiry, or one already expired: 403 problem."""
    answer = await api.client.post(
        "/export",
        json={
            **SEED_BODY,
            "type": "menuCategoriesByMuscle",
            "fileName": "m.csv",
            "variables": {"a": "muscle1", "b": "muscle2"},
        },
        headers=auth("alice"),
    )
    url = answer.json()["url"]
    assert (await api.client.get(url)).status_code == 200
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    signer = api.app.state.exportd.signer
    key = parts.path.removeprefix("/v1/files/")
    past = int(time.time()) - 10
    variants = [
        f"{parts.path}?{urlencode({**query, 'signature': 'A' + query['signature'][1:]})}",
        f"{parts.path}?{urlencode({**query, 'expires': int(query['expires']) + 1})}",
        f"{parts.path.replace('m.csv', 'n.csv')}?{parts.query}",
        f"{parts.path}?{urlencode({'expires': past, 'signature': signer.signature(key, past)})}",
        parts.path,
    ]
    for variant in variants:
        response = await api.client.get(variant)
        assert response.status_code == 403, variant
        assert response.headers["content-type"] == "application/problem+json"


async def test_export_types_lists_the_catalog_without_queries(api: Api) -> None:
    """The public catalog view: each type with its variable schema, never its SQL."""
    response = await api.client.get("/v1/export-types", headers=auth("alice"))
    types = {item["name"]: item for item in response.json()["items"]}
    assert types["userExport"]["variables"]["x"]["type"] == "integer"
    assert "query" not in types["userExport"] and "SELECT" not in response.text


async def test_unknown_routes_and_methods_are_problem_json(api: Api) -> None:
    """404 and 405 from the framework come as problem+json too (405 keeps its Allow header)."""
    missing = await api.client.get("/v2/nothing", headers=auth("alice"))
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await api.client.put("/v1/exports", headers=auth("alice"))
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == "application/problem+json"
    assert "POST" in wrong.headers["allow"]
