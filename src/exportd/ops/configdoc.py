"""The configuration reference, generated from the settings classes so it cannot drift.

``python -m exportd.ops.configdoc`` prints one Markdown table per group of processes: every field of
every settings class in :mod:`exportd.settings` and of the models nested in them, with its
environment variable (``EXPORTD_...``, nested with ``__``), the ``_FILE`` variant of secrets, the
type and bounds, the default and what it means. ``--write docs/operations.md`` replaces the text
between the ``config:begin`` / ``config:end`` markers; ``--check`` exits 1 when that text is stale.

A field's meaning comes from its ``Field(description=...)``; fields that have none yet are
described in :data:`FALLBACK_DESCRIPTIONS` here. A test fails when a setting has no description,
when a fallback names a setting that does not exist, and when the document is out of date.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import json
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from exportd import settings as settings_module
from exportd.contract.addresses import EmailAddress

BEGIN_MARKER = "<!-- config:begin -->"
END_MARKER = "<!-- config:end -->"
DICT_KEY_PLACEHOLDER = "<NAME>"

# Meanings of fields that carry no Field(description=...) in settings.py, by env name, or by
# "process:ENV" where two processes declare one name differently. Prefer adding the description
# to the field itself; an entry here for a field that has one is ignored.
FALLBACK_DESCRIPTIONS: dict[str, str] = {
    "EXPORTD_DATA_DIR": (
        "Directory of the embedded mode's state: SQLite state store, sample DuckDB database, "
        "local files and development secrets. Made absolute at start."
    ),
    "EXPORTD_CATALOG_PATH": (
        "YAML catalog of export types. Unset: the catalog shipped in the package "
        "(`src/exportd/data/catalog.yaml`)."
    ),
    "EXPORTD_SOURCES__<NAME>__KIND": "Database kind of source `<NAME>` (the catalog names it).",
    "EXPORTD_SOURCES__<NAME>__PATH": "DuckDB file of source `<NAME>` (kind `duckdb`).",
    "EXPORTD_SOURCES__<NAME>__DSN": (
        "Connection string of source `<NAME>` (kind `postgres` or `mysql`)."
    ),
    "EXPORTD_SOURCES__<NAME>__PASSWORD": ("Password of source `<NAME>`, kept out of the DSN."),
    "EXPORTD_SOURCES__<NAME>__PASSWORD_FILE": (
        "File holding the password of source `<NAME>`; wins over the inline value."
    ),
    "EXPORTD_STORAGE__KIND": "Where finished files are stored.",
    "EXPORTD_STORAGE__ROOT": ("Directory of local storage. Unset: `<data_dir>/files`."),
    "EXPORTD_STORAGE__BUCKET": "Bucket name (object storage kinds).",
    "EXPORTD_STORAGE__PREFIX": "Key prefix inside the bucket or directory.",
    "EXPORTD_STORAGE__ENDPOINT_URL": (
        "Endpoint of an S3-compatible service (object storage kinds); unset: the provider's."
    ),
    "EXPORTD_STORAGE__REGION": "Region of the bucket (object storage kinds).",
    "EXPORTD_SIGNING_KEY": (
        "HMAC key that signs download links. Unset: a development key created once under "
        "`<data_dir>/secrets/signing_key`. Every API replica needs the same key."
    ),
    "EXPORTD_PUBLIC_URL": "Base URL clients reach the API at; download links start with it.",
    "EXPORTD_LINK_EXPIRY_SECONDS": (
        "Lifetime of a download link; more than 7 days (604800 s) is refused at start."
    ),
    "EXPORTD_LOG_LEVEL": "Python log level name (DEBUG, INFO, WARNING, ERROR).",
    "EXPORTD_HOST": "Interface `exportd serve` listens on.",
    "EXPORTD_PORT": "TCP port `exportd serve` listens on.",
    "EXPORTD_BACKEND": (
        "`embedded`: local child processes and SQLite; `kubernetes`: one ExportRequest "
        "resource per export, run as a Job by the operator."
    ),
    "EXPORTD_JWT_SECRET": (
        "Shared secret of HS256 bearer tokens. Unset: a development secret under "
        "`<data_dir>/secrets/jwt_secret`, the one `exportd token` signs with."
    ),
    "EXPORTD_JWT_ALGORITHMS": (
        "Accepted JWT algorithms (JSON list); pinned here, never taken from the token."
    ),
    "EXPORTD_JWT_AUDIENCE": "Required `aud` claim; unset: not checked.",
    "EXPORTD_JWT_ISSUER": "Required `iss` claim; unset: not checked.",
    "EXPORTD_JWT_LEEWAY_SECONDS": "Clock skew tolerated on `exp` and `nbf`.",
    "EXPORTD_STATE_DB_URL": (
        "State store (export records, credits, idempotency keys). Unset: SQLite at "
        "`<data_dir>/state.sqlite3`."
    ),
    "EXPORTD_MAX_RUNNING_EXPORTS": (
        "Embedded mode: exporter child processes running at once; the rest wait in phase Queued."
    ),
    "EXPORTD_MAX_ATTEMPTS": (
        "Embedded mode: runs of one export before a transient failure becomes Failed."
    ),
    "EXPORTD_RETRY_BACKOFF_SECONDS": (
        "Embedded mode: wait before the first retry of a transiently failed export; doubled "
        "for each further attempt, at most 60 s."
    ),
    "EXPORTD_CANCEL_GRACE_SECONDS": (
        "Embedded mode: time an exporter child gets after SIGTERM (cancel or shutdown) before "
        "SIGKILL."
    ),
    "EXPORTD_SPEC_JSON": (
        "The export spec as JSON, used when neither `--spec-file` nor `--spec-json` is given "
        "(standard input otherwise)."
    ),
    "EXPORTD_SYNC_WAIT_SECONDS": (
        "How long `POST /export` waits for the file before answering 202 with a status URL."
    ),
    "api:EXPORTD_EXPORTER_COMMAND": (
        "Command (JSON list) the local runner starts per export. Empty: "
        "`python -m exportd.exporter` with the API's own interpreter."
    ),
    "EXPORTD_KUBERNETES_NAMESPACE": (
        "Kubernetes backend: namespace the API creates ExportRequest resources in."
    ),
    "EXPORTD_BATCH_ROWS": (
        "Most rows fetched from the source per batch; fewer where rows are large, so a batch "
        "holds about 4 MiB (bounds the exporter's memory)."
    ),
    "EXPORTD_PROGRESS_INTERVAL_SECONDS": "Least time between two progress reports of an export.",
    "EXPORTD_TEMP_DIR": (
        "Directory of the file being written before it is published. Unset: `<data_dir>/tmp`."
    ),
    "EXPORTD_NAMESPACE": "Namespace the operator watches. Unset: all namespaces.",
    "EXPORTD_EXPORTER_IMAGE": "Container image of the exporter Jobs.",
    "EXPORTD_MAX_RUNNING_JOBS": (
        "Exporter Jobs running at once, cluster-wide; the rest wait in phase Queued."
    ),
    "EXPORTD_MAX_RUNNING_PER_REQUESTER": "Exporter Jobs running at once for one requester.",
}


@dataclass(frozen=True)
class SettingDoc:
    """One line of the reference: a leaf setting and what a reader needs to set it."""

    env: str
    type: str
    default: str
    description: str
    secret: bool
    processes: tuple[str, ...]


def settings_classes() -> dict[str, type[BaseSettings]]:
    """The concrete settings classes of :mod:`exportd.settings`, by process name.

    A class that another one there extends (``CommonSettings``) is a base, not a process.
    """
    found = [
        obj
        for obj in vars(settings_module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseSettings)
        and obj.__module__ == settings_module.__name__
    ]
    concrete = [cls for cls in found if not any(o is not cls and issubclass(o, cls) for o in found)]
    return {_process_name(cls): cls for cls in concrete}


def _process_name(cls: type) -> str:
    return cls.__name__.removesuffix("Settings").lower()


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _leaf_fields(
    model: type[BaseModel], prefix: str, delimiter: str
) -> Iterator[tuple[str, FieldInfo]]:
    """``(env name, field)`` for every leaf, descending into nested models and dicts of them."""
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        inner, _ = _unwrap_optional(field.annotation)
        nested = _model_class(inner)
        if nested is not None:
            yield from _leaf_fields(nested, f"{env}{delimiter}", delimiter)
            continue
        if get_origin(inner) is dict:
            value_model = _model_class(get_args(inner)[1])
            if value_model is not None:
                yield from _leaf_fields(
                    value_model, f"{env}{delimiter}{DICT_KEY_PLACEHOLDER}{delimiter}", delimiter
                )
                continue
        yield env, field


def _type_text(field: FieldInfo) -> str:
    inner, _ = _unwrap_optional(field.annotation)
    bounds = [_bound_text(m) for m in field.metadata]
    return ", ".join([_type_name(inner), *(b for b in bounds if b)])


_SIMPLE_NAMES: dict[Any, str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    Path: "path",
    SecretStr: "secret string",
    EmailAddress: "e-mail address",
}


def _type_name(annotation: Any) -> str:
    if annotation in _SIMPLE_NAMES:
        return _SIMPLE_NAMES[annotation]
    if get_origin(annotation) is Literal:
        return "one of " + " / ".join(f"`{a}`" for a in get_args(annotation))
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return "one of " + " / ".join(f"`{m.value}`" for m in annotation)
    if get_origin(annotation) in (list, tuple, set):
        (item, *_) = get_args(annotation) or (Any,)
        return f"JSON list of {_type_name(item)}"
    if get_origin(annotation) is dict:
        return "JSON object"
    return getattr(annotation, "__name__", str(annotation))


def _bound_text(metadata: Any) -> str:
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    attr = type(metadata).__name__.lower()
    if attr in symbols and isinstance(metadata, annotated_types.BaseMetadata):
        return f"{symbols[attr]} {getattr(metadata, attr)}"
    return ""


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.get_default(call_default_factory=True, validated_data={})
    else:
        value = field.default
    if value is None or value is PydanticUndefined:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, PurePath):
        value = str(value)
    if isinstance(value, bool | list | dict | int | float):
        value = json.dumps(value)
    return f"`{value}`"


def _is_secret(field: FieldInfo) -> bool:
    inner, _ = _unwrap_optional(field.annotation)
    return inner is SecretStr


def _description(env: str, field: FieldInfo, process: str) -> str:
    fallback = FALLBACK_DESCRIPTIONS.get(f"{process}:{env}") or FALLBACK_DESCRIPTIONS.get(env, "")
    return (field.description or fallback).strip()


def collect() -> list[SettingDoc]:
    """Every leaf setting of every settings class, with the processes that read it.

    A field shared through a base class is one line. Two classes that declare the same name
    differently (``exporter_command`` of the API and of the operator) get a line each.
    """
    merged: dict[tuple[str, str, str, str, bool], list[str]] = {}
    for process, cls in settings_classes().items():
        prefix = str(cls.model_config.get("env_prefix", ""))
        delimiter = str(cls.model_config.get("env_nested_delimiter") or "__")
        for env, field in _leaf_fields(cls, prefix, delimiter):
            key = (
                env,
                _type_text(field),
                _default_text(field),
                _description(env, field, process),
                _is_secret(field),
            )
            merged.setdefault(key, []).append(process)
    return [
        SettingDoc(env, type_, default, description, secret, tuple(processes))
        for (env, type_, default, description, secret), processes in merged.items()
    ]


def missing_descriptions(docs: list[SettingDoc]) -> list[str]:
    return [doc.env for doc in docs if not doc.description]


def stale_fallbacks(docs: list[SettingDoc]) -> list[str]:
    """Fallback descriptions naming a setting that no longer exists."""
    known = {doc.env for doc in docs}
    known |= {f"{process}:{doc.env}" for doc in docs for process in doc.processes}
    return sorted(set(FALLBACK_DESCRIPTIONS) - known)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(doc: SettingDoc) -> str:
    meaning = doc.description
    if doc.secret:
        meaning += f" Secret: may instead come from the file named by `{doc.env}_FILE`."
    return f"| `{doc.env}` | {_cell(doc.type)} | {_cell(doc.default)} | {_cell(meaning)} |"


def _group_title(processes: tuple[str, ...], all_processes: tuple[str, ...]) -> str:
    if processes == all_processes:
        return "Every process (" + ", ".join(processes) + ")"
    if len(processes) == 1:
        cls = settings_classes()[processes[0]]
        first_line = (inspect.getdoc(cls) or processes[0]).splitlines()[0]
        return first_line.replace("``", "`").rstrip(".")
    return "Only " + ", ".join(processes)


def render() -> str:
    """The reference as Markdown, without markers: one table per group of processes."""
    docs = collect()
    all_processes = tuple(settings_classes())
    groups: dict[tuple[str, ...], list[SettingDoc]] = {}
    for doc in docs:
        groups.setdefault(doc.processes, []).append(doc)
    order = sorted(groups, key=lambda g: (g != all_processes, len(g), g))
    lines = [
        "<!-- Generated by `python -m exportd.ops.configdoc --write docs/operations.md`. "
        "Do not edit by hand. -->",
    ]
    for group in order:
        lines += ["", f"#### {_group_title(group, all_processes)}", ""]
        lines += ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
        lines += [_row(doc) for doc in groups[group]]
    return "\n".join(lines) + "\n"


def replace_between_markers(document: str, block: str) -> str:
    start = document.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = document.index(END_MARKER)
    return f"{document[:start]}\n{block}{document[end:]}"


def block_between_markers(document: str) -> str:
    start = document.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    return document[start : document.index(END_MARKER)].lstrip("\n")


_DOCUMENTED_ENV = re.compile(r"^\| `(EXPORTD_[A-Z0-9_<>]+)` \|", re.MULTILINE)


def documented_envs(document: str) -> list[str]:
    """The variables that have a line in the document's configuration reference."""
    return _DOCUMENTED_ENV.findall(block_between_markers(document))


def reference_drift(document: str) -> tuple[list[str], list[str]]:
    """``(settings without a line, lines without a setting)``; both empty when in step."""
    documented = set(documented_envs(document))
    actual = {doc.env for doc in collect()}
    return sorted(actual - documented), sorted(documented - actual)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exportd.ops.configdoc", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="DOC", help="replace the marked block")
    group.add_argument("--check", type=Path, metavar="DOC", help="exit 1 if the block is stale")
    args = parser.parse_args(argv)
    block = render()
    if args.write is not None:
        text = args.write.read_text(encoding="utf-8")
        args.write.write_text(replace_between_markers(text, block), encoding="utf-8")
        return 0
    if args.check is not None:
        current = block_between_markers(args.check.read_text(encoding="utf-8"))
        if current != block:
            print(f"{args.check}: configuration reference is stale; run --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
