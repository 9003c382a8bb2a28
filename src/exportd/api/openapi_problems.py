"""The OpenAPI document declares every problem+json answer the API can give.

Some answers come from middleware, not from routes, so no route declares them: 401 (the bearer
check), 429 (rate limits), 413 (body limit). Some routes get FastAPI's default 422 schema while
the API answers 422 as problem+json. This module completes the generated document once, so a
client generator (or schemathesis) sees exactly what the API sends:

- every operation behind the bearer scheme: 401 (with ``WWW-Authenticate``) and 429 (with
  ``Retry-After`` and the ``RateLimit`` fields);
- every operation with a request body: 400 (bytes that are not UTF-8) and 413;
- every 422: problem+json (replacing FastAPI's ``HTTPValidationError``);
- the create routes: 402 (no credit left), 409 (idempotency key in use) and 503 (queue full);
  ``POST /export``, which reports the export's own failure, also 502 and 504.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from exportd.api.ratelimit import CREATE_ROUTES

PROBLEM_REF = "#/components/schemas/Problem"
_DESCRIPTIONS = {
    400: "The body could not be read (not UTF-8 text); `errors` names `body`",
    401: "Missing or invalid bearer token",
    402: "No credit left; `nextCreditAt` says when the next one arrives",
    409: "A request with this Idempotency-Key is still being processed",
    413: "The request body is larger than the limit (64 KB)",
    422: "Invalid request; `errors` names each field",
    429: "Too many requests; retry after `Retry-After` seconds",
    502: "The export failed at delivery (the mail server refused or failed)",
    503: "The export queue is full, or the export failed transiently; retry later",
    504: "The export ran past its deadline",
}
WAIT_ROUTE = ("POST", "/export")
_INTEGER_HEADER = {"schema": {"type": "integer", "minimum": 0}}
_STRING_HEADER = {"schema": {"type": "string"}}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": _STRING_HEADER},
    402: {"Retry-After": _INTEGER_HEADER},
    429: {
        "Retry-After": _INTEGER_HEADER,
        "RateLimit": _STRING_HEADER,
        "RateLimit-Policy": _STRING_HEADER,
    },
    503: {"Retry-After": _INTEGER_HEADER},
}


def problem_response_object(status: int) -> dict[str, Any]:
    schema = {"$ref": PROBLEM_REF}
    answer: dict[str, Any] = {
        "description": _DESCRIPTIONS.get(status, "Problem"),
        "content": {"application/problem+json": {"schema": schema}},
    }
    if status in _HEADERS:
        answer["headers"] = _HEADERS[status]
    return answer


def _is_default_validation_error(response: dict[str, Any]) -> bool:
    content = response.get("content", {})
    return any("HTTPValidationError" in str(media.get("schema", {})) for media in content.values())


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted: set[int] = set()
    if operation.get("security"):
        wanted |= {401, 429}
    if "requestBody" in operation:
        wanted |= {400, 413}
    if (method.upper(), path) in CREATE_ROUTES:
        wanted |= {402, 409, 503}
    if (method.upper(), path) == WAIT_ROUTE:
        wanted |= {502, 504}
    for status in sorted(wanted):
        responses.setdefault(str(status), problem_response_object(status))
    if "422" in responses and _is_default_validation_error(responses["422"]):
        responses["422"] = problem_response_object(422)


def complete_document(schema: dict[str, Any]) -> dict[str, Any]:
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "responses" in operation:
                _complete_operation(path, method, operation)
    return schema


def document_problems(app: FastAPI) -> None:
    """Wrap ``app.openapi`` so the generated document is completed once, when first built."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_document(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
