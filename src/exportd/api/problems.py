"""Every error the API returns, as RFC 9457 problem details, translated in this one place.

Sources of errors and their translation:

- :class:`~exportd.errors.ExportdError` (the taxonomy): its ``status``, ``reason`` and, for
  :class:`~exportd.errors.InvalidInput`, the fields at fault.
- FastAPI's request validation: 422 naming each field by its wire name (``fileName``,
  ``variables.x``), never by Python internals.
- Starlette's HTTP errors (404 unknown route, 405 wrong method): their status, headers kept.
- Anything else: 500 without internals; the traceback goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from exportd.api.models import FieldProblem, Problem
from exportd.errors import ExportdError, FieldError, InvalidInput

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:exportd:problem:"
_LOCATION_ROOTS = {"body", "query", "path", "header", "cookie"}
# Whole-model validators of ExportRequestBody report at the model; these name their field.
_MODEL_MESSAGE_FIELDS = (("email is required", "email"), ("fileName extension", "fileName"))


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    reason: str | None = None,
    errors: Iterable[FieldError] = (),
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    export_id: str | None = None,
) -> ProblemResponse:
    problem = Problem(
        type=f"{PROBLEM_TYPE_BASE}{reason}" if reason else "about:blank",
        title=_title(status),
        status=status,
        detail=detail,
        instance=instance,
        reason=reason,
        errors=[_field_problem(e) for e in errors] or None,
        export_id=export_id,
    )
    return ProblemResponse(problem.to_json_dict(), status_code=status, headers=headers)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _field_problem(error: FieldError) -> FieldProblem:
    pointer = "/" + error.field.replace("~", "~0").replace("/", "~1").replace(".", "/")
    return FieldProblem(field=error.field, pointer=pointer, message=error.message)


def field_of(loc: Sequence[Any], message: str) -> str:
    """A validation location as the client wrote it: ``("body", "variables", "x")`` ->
    ``variables.x``; the body itself (bad JSON) -> ``body``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATION_ROOTS:
        parts = parts[1:] if len(parts) > 1 else parts
    parts = [p for p in parts if not p.startswith("function-after[")]
    if parts == ["body"]:
        for needle, name in _MODEL_MESSAGE_FIELDS:
            if needle in message:
                return name
    return ".".join(parts) or "body"


def validation_errors(exc: RequestValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid"))
        errors.append(FieldError(field_of(error.get("loc", ()), message), message))
    return errors


async def _on_validation(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc)
    fields = ", ".join(sorted({e.field for e in errors}))
    return problem_response(
        422,
        f"invalid request: {fields}",
        reason="InvalidInput",
        errors=errors,
        instance=request.url.path,
    )


async def _on_exportd_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ExportdError)
    errors = exc.errors if isinstance(exc, InvalidInput) else []
    if exc.status >= 500:
        log.warning("%s %s: %s (%s)", request.method, request.url.path, exc.message, exc.reason)
    return problem_response(
        exc.status, exc.message, reason=exc.reason, errors=errors, instance=request.url.path
    )


async def _on_http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    # The framework's 400 is always about the body it could not parse (bytes that are not UTF-8).
    errors = [FieldError("body", detail or "unreadable")] if exc.status_code == 400 else []
    return problem_response(
        exc.status_code,
        detail,
        errors=errors,
        headers=dict(exc.headers or {}),
        instance=request.url.path,
    )


async def _on_unexpected(request: Request, exc: Exception) -> ProblemResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal error", reason="InternalError")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ExportdError, _on_exportd_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
