"""Every error the API returns, as RFC 9457 problem details, translated in this one place.

Sources of errors and their translation:

- :class:`~exportd.contract.errors.ExportdError` (the taxonomy): its ``status``, ``reason`` and, for
  :class:`~exportd.contract.errors.InvalidInput`, the fields at fault.
- FastAPI's request validation: 422 naming each field by its wire name (``fileName``,
  ``variables.x``), never by Python internals.
- Starlette's HTTP errors (404 unknown route, 405 wrong method): their status and a reason
  (``NotFound``, ``MethodNotAllowed``); a 405's ``Allow`` lists every method of the path, and
  ``OPTIONS`` answers 204 with it.
- Bodies that cannot be read: 400 ``InvalidJson`` (saying the line and column),
  ``InvalidUtf8`` or ``JsonTooDeep``.
- Anything else: 500 without internals; the traceback goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from exportd.api.models import FieldProblem, Problem
from exportd.contract.errors import ExportdError, FieldError, InvalidInput

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
    reason = reason or _reason_of(status)  # every problem names its reason, for machines
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


def retry_later_response(
    request: Request, exc: ExportdError, retry_after_seconds: int, export_id: str | None = None
) -> ProblemResponse:
    """``exc`` as problem+json with ``Retry-After``: every "try again later" answer (a full
    queue, the state store away, a key still being answered, a daily cap)."""
    return problem_response(
        exc.status,
        exc.message,
        reason=exc.reason,
        headers={"Retry-After": str(retry_after_seconds)},
        instance=request.url.path,
        export_id=export_id,
    )


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
    broken = [e for e in exc.errors() if e.get("type") == "json_invalid"]
    if broken:
        return await _malformed_json(request, broken[0])
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


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # the framework's 400 is always a body it could not parse
        return await _unparsable_body(request)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        if request.method == "OPTIONS":  # which methods this path takes: an answer, not an error
            return Response(status_code=204, headers=headers)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(
        exc.status_code,
        detail,
        headers=headers,
        instance=request.url.path,
    )


def _reason_of(status: int) -> str:
    """A stable CamelCase reason for the framework's own errors: ``NotFound``,
    ``MethodNotAllowed``..."""
    return "".join(word.capitalize() for word in _title(status).replace("-", " ").split())


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path (Starlette's own 405 names the first route's
    alone), with HEAD beside GET and OPTIONS always."""
    methods: set[str] = {"OPTIONS"}
    path = request.url.path
    for route in _leaf_routes(request.app.router.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _leaf_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The app's routes, through the routers FastAPI wraps at ``include_router`` (no prefixes
    are used here, so each route's own pattern is the app's)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        else:
            yield route


async def _malformed_json(request: Request, error: Any) -> ProblemResponse:
    """Where the JSON breaks, in the words a person uses: line, column, what was expected."""
    position = error.get("loc", ("body", 0))[-1]
    body = await request.body()
    position = position if isinstance(position, int) else 0
    before = body[:position].decode("utf-8", "replace")
    line, column = before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1
    what = str((error.get("ctx") or {}).get("error") or "invalid JSON")
    detail = f"the request body is not valid JSON: {what} at line {line}, column {column}"
    return problem_response(
        400,
        detail,
        reason="InvalidJson",
        errors=[FieldError("body", f"{what} at line {line}, column {column}")],
        instance=request.url.path,
    )


async def _unparsable_body(request: Request) -> ProblemResponse:
    """Bytes that are not UTF-8, or JSON nested too deep for the parser."""
    body = await request.body()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = "InvalidUtf8"
        detail = f"the request body is not UTF-8 text: byte {exc.start + 1} begins no character"
    else:
        reason = "JsonTooDeep"
        detail = "the request body nests JSON arrays or objects too deeply to be read"
    return problem_response(
        400, detail, reason=reason, errors=[FieldError("body", detail)], instance=request.url.path
    )


async def _on_unexpected(request: Request, exc: Exception) -> ProblemResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal error", reason="InternalError")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ExportdError, _on_exportd_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
