"""The export catalog: the only queries exportd will ever run.

A catalog is a YAML file (its path comes from settings). Each export type names a source, an SQL
query with ``:name`` placeholders, and a typed schema for its variables. Requests carry only a type
name and variable values; values are validated here and later bound as driver parameters, never
formatted into SQL.

.. code-block:: yaml

    types:
      userExport:
        title: Users by tier
        source: sample
        query: SELECT id, name FROM users WHERE tier BETWEEN :x AND :y ORDER BY id
        variables:
          x: {type: integer, required: true, min: 1, max: 5, description: lowest tier}
          y: {type: integer, required: true, min: 1, max: 5, description: highest tier}
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, create_model
from pydantic.alias_generators import to_camel

from exportd.contract.errors import FieldError, InvalidInput
from exportd.contract.spec import ExportTypeName, VariableKey, VariableValue
from exportd.contract.sqlparams import placeholders_in

STRING_MAX_DEFAULT = 1000
# YAML 1.1 (kubectl, Helm, Argo CD) reads unquoted keys y/yes/on as true and n/no/off as false;
# JSON turns those into the keys "true" and "false". The CRD's CEL rule on spec.variables says
# exactly this too (tests/unit/test_exportrequest_crd.py keeps the two equal).
YAML_BOOLEAN_KEYS = ("true", "false")
YAML_BOOLEAN_KEY_HINT = (
    'a variable key "true" or "false" is what YAML 1.1 makes of an unquoted y, n, yes, no, on '
    'or off: quote the key (e.g. "y": 2)'
)


class VariableKind(StrEnum):
    INTEGER = "integer"
    NUMBER = "number"
    STRING = "string"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"


class CatalogModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class VariableSchema(CatalogModel):
    type: VariableKind
    required: bool = True
    default: VariableValue = None
    min: float | None = None
    max: float | None = None
    enum: list[str | int] | None = None
    pattern: str | None = None
    max_length: int = Field(STRING_MAX_DEFAULT, ge=1, le=10_000)
    description: str = ""
    examples: list[VariableValue] | None = None  # shown as hints by the page and the API docs

    def public_schema(self) -> dict[str, Any]:
        """The schema as clients see it: bounds in the variable's own type (``1``, not ``1.0``)
        and ``maxLength`` only where it applies (strings)."""
        shown = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if self.type is not VariableKind.STRING:
            shown.pop("maxLength", None)
        if self.type is VariableKind.INTEGER:
            for bound in ("min", "max"):
                if bound in shown and float(shown[bound]).is_integer():
                    shown[bound] = int(shown[bound])
        return shown


class ExportType(CatalogModel):
    title: str = ""
    description: str = ""
    source: str = "sample"
    query: str
    variables: dict[VariableKey, VariableSchema] = Field(default_factory=dict)
    metadata: bool = True
    timezone: str = "UTC"
    timeout_seconds: int = Field(600, ge=1, le=86_400)
    statement_timeout_seconds: int = Field(300, ge=1, le=86_400)
    max_rows: int | None = Field(None, ge=1)
    csv_bom: bool = False  # a UTF-8 byte order mark, for Excel versions that need it
    csv_layout: Literal["header", "comments"] = Field(
        "header",
        description="CSV layout: 'header' (the header row first, nothing else: csv readers, "
        "pandas and spreadsheet imports take it as is; the timestamps go to a JSON sidecar "
        "beside the file) or 'comments' (a '# exportd:' line with the request time first and "
        "one with the completion time last)",
    )
    csv_neutralize_formulas: bool = Field(
        True,
        description="Prefix ' to CSV text starting with = + - @ TAB or CR, so spreadsheet "
        "programs show it instead of running it as a formula; off for machine consumers",
    )
    xlsx_writer: Literal["fast", "xlsxwriter"] = Field(
        "fast",
        description="XLSX writer: 'fast' (bulk sheet XML, the default) or 'xlsxwriter' "
        "(XlsxWriter's row loop, for what needs its features; ~15x slower)",
    )

    @property
    def csv_sidecar(self) -> bool:
        """A CSV of this type has its times in a sidecar (exportd.exporter.sidecar)."""
        return self.metadata and self.csv_layout == "header"

    def public_view(self, name: str) -> dict[str, Any]:
        """What ``GET /v1/export-types`` shows: everything but the query and the source."""
        return {
            "name": name,
            "title": self.title or name,
            "description": self.description,
            "variables": {key: var.public_schema() for key, var in self.variables.items()},
            "metadata": self.metadata,
            "timezone": self.timezone,
        }


_PYTHON_TYPES: dict[VariableKind, Any] = {
    VariableKind.INTEGER: int,
    VariableKind.NUMBER: float,
    VariableKind.STRING: str,
    VariableKind.BOOLEAN: StrictBool,
    VariableKind.DATE: date,
    VariableKind.DATETIME: datetime,
}


def _field_for(var: VariableSchema) -> tuple[Any, Any]:
    constraints: dict[str, Any] = {}
    if var.type in (VariableKind.INTEGER, VariableKind.NUMBER):
        constraints = {"ge": var.min, "le": var.max, "strict": var.type is VariableKind.INTEGER}
        constraints["allow_inf_nan"] = False if var.type is VariableKind.NUMBER else None
    elif var.type is VariableKind.STRING:
        constraints = {"max_length": var.max_length, "pattern": var.pattern}
    constraints = {k: v for k, v in constraints.items() if v is not None}
    # The field types are chosen at run time, so the typing constructs are used as values here.
    annotated: Any = cast(Any, Annotated)[_PYTHON_TYPES[var.type], Field(**constraints)]
    if var.enum is not None:
        annotated = cast(Any, Literal)[tuple(var.enum)]
    if var.required:
        return (annotated, ...)
    return (annotated | None, var.default)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    types: dict[ExportTypeName, ExportType]

    @classmethod
    def load(cls, path: Path) -> Catalog:
        with path.open(encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
        catalog = cls.model_validate(raw)
        catalog.check_queries()
        return catalog

    def check_queries(self) -> None:
        """Refuse at load time a query whose placeholders and variables disagree."""
        for name, export_type in self.types.items():
            used = placeholders_in(export_type.query)
            declared = set(export_type.variables)
            if used != declared:
                raise ValueError(
                    f"export type {name}: placeholders {sorted(used)} "
                    f"do not match variables {sorted(declared)}"
                )

    def get(self, name: str) -> ExportType:
        try:
            return self.types[name]
        except KeyError:
            raise InvalidInput(
                f"unknown export type {name!r}",
                reason="UnknownExportType",
                errors=[FieldError("type", f"unknown export type {name!r}")],
            ) from None

    def bind(self, name: str, variables: dict[str, VariableValue]) -> dict[str, Any]:
        """Validate ``variables`` against the type's schema; return typed parameter values."""
        export_type = self.get(name)
        yaml_booleans = [key for key in YAML_BOOLEAN_KEYS if key in variables]
        if yaml_booleans and not set(yaml_booleans) <= set(export_type.variables):
            raise InvalidInput(
                f"invalid variables for export type {name!r}",
                reason="InvalidVariables",
                errors=[
                    FieldError(f"variables.{key}", YAML_BOOLEAN_KEY_HINT) for key in yaml_booleans
                ],
            )
        model = _variables_model(name, export_type)
        try:
            validated = model.model_validate(variables)
        except ValidationError as exc:
            raise InvalidInput(
                f"invalid variables for export type {name!r}",
                reason="InvalidVariables",
                errors=[
                    FieldError(".".join(["variables", *(str(p) for p in err["loc"])]), err["msg"])
                    for err in exc.errors()
                ],
            ) from None
        return validated.model_dump()


_MODEL_CACHE: dict[tuple[str, int], type[BaseModel]] = {}


def _variables_model(name: str, export_type: ExportType) -> type[BaseModel]:
    key = (name, id(export_type))
    if key not in _MODEL_CACHE:
        fields = {k: _field_for(v) for k, v in export_type.variables.items()}
        _MODEL_CACHE[key] = create_model(  # type: ignore[call-overload]
            f"Variables_{name}",
            __config__=ConfigDict(extra="forbid", validate_default=True),
            **fields,
        )
    return _MODEL_CACHE[key]
