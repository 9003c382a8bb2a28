"""crds/exportrequest.yaml: a valid, structural CRD that says what exportd.contract.exportrequest
says.

The CRD object is validated against the apiextensions.k8s.io/v1 schema of Kubernetes itself
(kubernetes-validate, strict: unknown fields fail); its OpenAPI schema must be structural (a type
on every node, so the apiserver can prune and kopf's status is not silently dropped); and its
fields must be exactly the ones the Python models read and write.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exportd.contract import exportrequest as er
from exportd.contract.catalog import YAML_BOOLEAN_KEY_HINT
from exportd.contract.spec import ExportResult, Phase
from exportd.operator.reconcile import OPERATOR_FIELDS

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "exportrequest.yaml"
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    [served] = crd["spec"]["versions"]
    return dict(served)


def schema_of(version: dict[str, Any], *path: str) -> dict[str, Any]:
    node: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    for name in path:
        node = node["properties"][name]
    return node


@pytest.mark.parametrize("kubernetes", KUBERNETES_VERSIONS)
def test_the_crd_is_a_valid_custom_resource_definition(
    crd: dict[str, Any], kubernetes: str
) -> None:
    kubernetes_validate.validate(crd, kubernetes, strict=True)


def test_the_validation_catches_a_mistake_in_a_crd(crd: dict[str, Any]) -> None:
    """The check above can fail: a misspelt field is refused."""
    broken = yaml.safe_load(yaml.safe_dump(crd))
    broken["spec"]["versions"][0]["subresource"] = broken["spec"]["versions"][0].pop("subresources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_names_group_version_and_scope_come_from_the_schema_module(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{er.PLURAL}.{er.GROUP}"
    assert spec["group"] == er.GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == er.KIND
    assert spec["names"]["plural"] == er.PLURAL and spec["names"]["singular"] == er.SINGULAR
    assert tuple(spec["names"]["shortNames"]) == er.SHORT_NAMES
    [served] = spec["versions"]
    assert served["name"] == er.VERSION and served["served"] and served["storage"]
    assert served["subresources"] == {"status": {}}


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def test_the_schema_is_structural(version: dict[str, Any]) -> None:
    """Every node has a type, except where unknown content is explicitly preserved (variable
    values: strings, numbers, booleans or null); no anyOf/oneOf with types of their own."""
    for path, node in _nodes(version["schema"]["openAPIV3Schema"]):
        preserved = node.get("x-kubernetes-preserve-unknown-fields") is True
        assert "type" in node or preserved, f"{path or 'root'} has no type"
        assert not {"anyOf", "oneOf", "allOf", "not"} & set(node), path
    variables = schema_of(version, "spec", "variables")
    assert variables["additionalProperties"]["nullable"] is True


def test_spec_fields_are_the_api_body_plus_requester_time_and_cancel(
    version: dict[str, Any],
) -> None:
    spec = schema_of(version, "spec")
    aliases = {field.alias for field in er.ExportRequestSpec.model_fields.values()}
    assert set(spec["properties"]) == aliases
    assert set(spec["required"]) == {"type", "fileName"}
    assert schema_of(version, "spec", "format")["enum"] == ["xlsx", "csv"]
    assert schema_of(version, "spec", "returnType")["enum"] == ["url", "email"]


def test_status_holds_every_field_the_operator_and_exporter_write(version: dict[str, Any]) -> None:
    status = schema_of(version, "status")["properties"]
    model = {field.alias for field in er.RequestStatus.model_fields.values()}
    assert set(status) == model
    written = {"progress", "result", "resultSignature", "lastError"}  # by the exporter
    assert set(OPERATOR_FIELDS) | written == model
    assert status["phase"]["enum"] == [phase.value for phase in Phase]
    results = {field.alias for field in ExportResult.model_fields.values()}
    assert set(status["result"]["properties"]) == results
    assert status["expiresAt"]["type"] == "string" and "format" not in status["expiresAt"]


def test_printer_columns_show_type_format_phase_rows_age_then_link_and_expiry(
    version: dict[str, Any],
) -> None:
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    main = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert main == ["Type", "Format", "Phase", "Rows", "Duration", "Age"]
    assert columns["Format"]["jsonPath"] == ".status.format"  # the effective one
    assert columns["URL"]["priority"] == columns["Expires"]["priority"] == 1
    assert columns["Expires"]["type"] == "string"  # a date column cannot show a future time
    assert columns["Age"]["type"] == "date"
    for column in columns.values():
        path = column["jsonPath"].lstrip(".").split(".")
        if path[0] in ("spec", "status"):
            schema_of(version, *path)  # the column reads a field the schema has


def test_every_property_has_a_description(version: dict[str, Any]) -> None:
    """``kubectl explain exportrequest.<field>`` has something to say for every field."""
    missing = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, child in (node.get("properties") or {}).items():
            if not child.get("description"):
                missing.append(f"{path}{name}")
            walk(child, f"{path}{name}.")
            if "items" in child:
                walk(child["items"], f"{path}{name}[].")

    walk(version["schema"]["openAPIV3Schema"], "")
    assert missing == []


@pytest.mark.parametrize(
    ("sent", "accepted"),
    [
        ({"x": 1, "true": 2}, False),  # kubectl's YAML 1.1 for {x: 1, y: 2}
        ({"a": 1, "false": 2}, False),  # ... for {a: 1, n: 2}
        ({"on": 1}, True),  # what a quoted key sends
        ({"x": 1, "y": 2}, True),
        ({}, True),
    ],
)
def test_the_crd_refuses_variable_keys_yaml_turned_into_booleans(
    version: dict[str, Any], sent: dict[str, Any], accepted: bool
) -> None:
    """The CEL rule on spec.variables, evaluated by a CEL interpreter on what kubectl sends for
    variables written in YAML 1.1 (unquoted y/n arrive as the keys "true"/"false", as
    test_gitops_yaml.py shows with kubectl itself): those fail with the same hint the operator
    and the API give (exportd.contract.catalog.YAML_BOOLEAN_KEY_HINT), quoted keys pass."""
    import celpy

    rules = schema_of(version, "spec", "variables")["x-kubernetes-validations"]
    [rule] = [r for r in rules if "'true'" in r["rule"]]
    assert rule["message"] == YAML_BOOLEAN_KEY_HINT
    environment = celpy.Environment()
    program = environment.program(environment.compile(rule["rule"]))
    assert bool(program.evaluate({"self": celpy.json_to_cel(sent)})) is accepted
