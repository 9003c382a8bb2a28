"""The API's edges as a careful client meets them: HEAD, OPTIONS, error reasons, bad bodies.

What is tried against the real embedded app: HEAD on a download link; OPTIONS and a wrong
method on the export resource; unreadable bodies (broken JSON, JSON nested 5,000 deep, bytes
that are not UTF-8); the catalog's description of integer variables. What must hold: HEAD gives
GET's status and headers without a body; ``Allow`` lists every method the path takes; every
4xx is problem+json with a ``reason``; a broken body is a 400 saying plainly what and where.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from exportd.contract.catalog import Catalog
from tests.integration.conftest import SHIPPED_CATALOG, auth
from tests.integration.delivery_apps import SMALL_BODY, embedded_api

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
JSON = {"Content-Type": "application/json"}


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, object] = response.json()
    assert problem["reason"] == reason and problem["type"] == f"urn:exportd:problem:{reason}"
    return problem


async def test_head_options_reasons_and_unreadable_bodies(tmp_path: Path, sample_db: Path) -> None:
    """See the module docstring; one app, checked edge by edge."""
    async with embedded_api(tmp_path / "data", sample_db) as api:
        client, alice = api.client, auth("alice")
        url = (await client.post("/export", json=SMALL_BODY, headers=alice)).json()["url"]
        got, head = await client.get(url), await client.head(url)
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == str(len(got.content)) != "0"
        assert head.headers["content-type"] == got.headers["content-type"]

        [export] = (await client.get("/v1/exports", headers=alice)).json()["items"]
        resource = f"/v1/exports/{export['id']}"
        options = await client.options(resource, headers=alice)
        assert (options.status_code, options.headers["allow"]) == (
            204,
            "DELETE, GET, HEAD, OPTIONS",
        )
        wrong = await client.put(resource, headers=alice)
        assert_problem(wrong, 405, "MethodNotAllowed")
        assert wrong.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
        listing = await client.options("/v1/exports", headers=alice)
        assert listing.headers["allow"] == "GET, HEAD, OPTIONS, POST"
        assert (await client.head(resource, headers=alice)).status_code == 200

        assert_problem(await client.get("/v2/nothing", headers=alice), 404, "NotFound")
        assert_problem(await client.get("/v1/exports"), 401, "Unauthenticated")
        assert_problem(await client.get(f"{url}x"), 403, "InvalidSignature")

        broken = b'{"type": "userExport",\n  "fileName": "a.xlsx",, "variables": {}}'
        problem = assert_problem(
            await client.post("/v1/exports", content=broken, headers={**alice, **JSON}),
            400,
            "InvalidJson",
        )
        assert problem["detail"] == (
            "the request body is not valid JSON: Expecting property name enclosed in double "
            "quotes at line 2, column 24"
        )
        deep = b"[" * 5000 + b"]" * 5000
        problem = assert_problem(
            await client.post("/v1/exports", content=deep, headers={**alice, **JSON}),
            400,
            "JsonTooDeep",
        )
        assert "too deeply" in str(problem["detail"])
        problem = assert_problem(
            await client.post(
                "/v1/exports", content=b'{"type": "\xff"}', headers={**alice, **JSON}
            ),
            400,
            "InvalidUtf8",
        )
        assert (
            problem["detail"] == "the request body is not UTF-8 text: byte 11 begins no character"
        )


async def test_export_types_describe_integers_as_integers(tmp_path: Path, sample_db: Path) -> None:
    """userExport's x and y: type integer, bounds 1 and 5 as JSON integers (not 1.0), no
    maxLength (a string rule); a string variable keeps its maxLength; examples are shown; the
    types come in the catalog's order, and the shipped catalog lists the seed's userExport
    first."""
    async with embedded_api(tmp_path / "data", sample_db) as api:
        response = await api.client.get("/v1/export-types", headers=auth("alice"))
    text = response.text
    items = response.json()["items"]
    assert [item["name"] for item in items] == list(Catalog.load(api.settings.catalog_path).types)
    assert next(iter(Catalog.load(SHIPPED_CATALOG).types)) == "userExport"
    x = {item["name"]: item for item in items}["userExport"]["variables"]["x"]
    assert x == {
        "type": "integer",
        "required": True,
        "min": 1,
        "max": 5,
        "description": "Lowest tier included: 1 (free) to 5 (enterprise)",
        "examples": [1],
    }
    assert '"min":1,' in text and '"min":1.0' not in text
    muscles = {item["name"]: item for item in items}["menuCategoriesByMuscle"]["variables"]
    assert muscles["a"]["maxLength"] == 64 and muscles["a"]["examples"] == ["muscle1"]
