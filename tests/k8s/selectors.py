"""Label and field selectors as the apiserver reads them (the subset our clients send).

Labels: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists) and
``!k`` (absent), comma-separated, all must hold. Fields: ``metadata.name`` and
``metadata.namespace`` with ``=``, ``==`` or ``!=``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SET_TERM = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_FIELDS = {"metadata.name": ("metadata", "name"), "metadata.namespace": ("metadata", "namespace")}


def _split_terms(selector: str) -> list[str]:
    """Commas separate terms except inside ``( )`` of set terms."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term.strip() for term in terms if term.strip()]


def _label_term_holds(labels: Mapping[str, str], term: str) -> bool:
    if match := _SET_TERM.match(term):
        key, operator, values = match.groups()
        allowed = {value.strip() for value in values.split(",")}
        return (labels.get(key) in allowed) == (operator == "in")
    if "!=" in term:
        key, value = (part.strip() for part in term.split("!=", 1))
        return labels.get(key) != value
    if "=" in term:
        key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
        return labels.get(key) == value
    if term.startswith("!"):
        return term[1:].strip() not in labels
    return term in labels


def matches_labels(obj: Mapping[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(_label_term_holds(labels, term) for term in _split_terms(selector))


def _field_value(obj: Mapping[str, Any], field: str) -> str:
    if field not in _FIELDS:
        raise ValueError(f"field selector on {field!r} is not supported")
    section, key = _FIELDS[field]
    return str((obj.get(section) or {}).get(key, ""))


def matches_fields(obj: Mapping[str, Any], selector: str) -> bool:
    for term in _split_terms(selector):
        if "!=" in term:
            field, value = (part.strip() for part in term.split("!=", 1))
            if _field_value(obj, field) == value:
                return False
        else:
            field, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            if _field_value(obj, field) != value:
                return False
    return True
