"""Export routes: the seed ``POST /export`` and the ``/v1/exports`` resource.

Order of work for a new export: the token was checked by the middleware; the body is validated
(422 naming the field); then :meth:`exportd.api.protection.Protection.create` checks delivery
and variables (422), admits the export in one store transaction (idempotency key, queue limits,
credit debit, record) and hands it to the backend. A caller sees its own exports; one with the
admin scope sees everyone's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse, Response

from exportd.api.auth import PrincipalDep
from exportd.api.context import EXPORTS_ROUTE, ApiContext, ContextDep
from exportd.api.idempotency import IdempotencyKeyHeader
from exportd.api.models import (
    AcceptedResponse,
    ExportList,
    ExportResource,
    Problem,
    SyncEmailResponse,
    SyncUrlResponse,
)
from exportd.api.problems import problem_response
from exportd.api.protection import Protection, ProtectionDep, Respond
from exportd.contract.errors import Forbidden
from exportd.contract.spec import ExportRequestBody, ExportSpec, ExportStatus, Phase, ReturnType
from exportd.delivery.by_email import FAILURE_REASONS as DELIVERY_FAILURE_REASONS
from exportd.security.tokens import Principal

router = APIRouter()

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (401, 404, 409, 422, 500)
}
# Shown in the API documents, and the valid requests schemathesis starts from.
REQUEST_EXAMPLES: dict[str, Any] = {
    "seed": {
        "summary": "The users of tiers x to y as a spreadsheet link",
        "value": {
            "type": "userExport",
            "returnType": "url",
            "fileName": "myexport.xlsx",
            "variables": {"x": 1, "y": 2},
        },
    },
    "csv": {
        "summary": "Menu categories for two muscles, as CSV",
        "value": {
            "type": "menuCategoriesByMuscle",
            "fileName": "menus.csv",
            "variables": {"a": "muscle1", "b": "muscle2"},
        },
    },
}
# A failed export seen by POST /export: which status tells the client the most.
_FAILURE_STATUS = {
    "InvalidInput": 422,
    "InvalidVariables": 422,
    "UnknownExportType": 422,
    "DeadlineExceeded": 504,
    "Interrupted": 503,
    "TransientFailure": 503,
    **dict.fromkeys(DELIVERY_FAILURE_REASONS, 502),  # the mail server refused or failed
    "SmtpUnavailable": 503,
}


RequestBody = Annotated[ExportRequestBody, Body(openapi_examples=REQUEST_EXAMPLES)]


@dataclass(frozen=True)
class NewExport:
    """What both create routes take from a request, and the one way they start an export."""

    body: ExportRequestBody
    principal: Principal
    context: ApiContext
    protection: Protection
    idempotency_key: str | None

    async def start(self, route: str, respond: Respond) -> Response:
        return await self.protection.create(
            self.context, self.body, self.principal, self.idempotency_key, route, respond
        )


async def new_export(
    body: RequestBody,
    principal: PrincipalDep,
    context: ContextDep,
    protection: ProtectionDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> NewExport:
    """The create routes' inputs, declared once; FastAPI validates and documents a dependency's
    parameters as the route's own, so both routes' OpenAPI entries are unchanged."""
    return NewExport(body, principal, context, protection, idempotency_key)


NewExportDep = Annotated[NewExport, Depends(new_export)]


@router.post(
    "/export",
    response_model=SyncUrlResponse | SyncEmailResponse,
    responses={202: {"model": AcceptedResponse}, **_PROBLEMS},
    summary="Export and wait: the link (or e-mail) when done, 202 past the wait",
)
async def export_and_wait(new: NewExportDep) -> Response:
    context = new.context

    async def wait_and_answer(spec: ExportSpec) -> Response:
        wait = context.settings.sync_wait_seconds
        status = await context.backend.wait_until_terminal(spec.id, wait)
        if status.phase is Phase.SUCCEEDED:
            return JSONResponse(_success_body(context, spec, status))
        if status.phase.is_terminal:
            return _failure(spec, status)
        accepted = AcceptedResponse(id=spec.id, status_url=context.status_url(spec.id))
        return JSONResponse(accepted.to_json_dict(), status_code=202)

    return await new.start("/export", wait_and_answer)


def _success_body(context: ApiContext, spec: ExportSpec, status: ExportStatus) -> dict[str, Any]:
    if spec.return_type is ReturnType.EMAIL:
        return SyncEmailResponse().to_json_dict()
    assert status.object_key is not None
    url, _ = context.export_link(spec, status.object_key)
    return SyncUrlResponse(url=url).to_json_dict()


def _failure(spec: ExportSpec, status: ExportStatus) -> JSONResponse:
    if status.phase is Phase.CANCELLED:
        return problem_response(
            409, "the export was cancelled", reason="Cancelled", export_id=spec.id
        )
    reason = status.error.reason if status.error else "ExportFailed"
    message = status.error.message if status.error else "the export failed"
    return problem_response(
        _FAILURE_STATUS.get(reason, 500), message, reason=reason, export_id=spec.id
    )


@router.post(
    EXPORTS_ROUTE,
    status_code=202,
    response_model=ExportResource,
    responses=_PROBLEMS,
    summary="Start an export; follow it at the Location",
)
async def create_export(new: NewExportDep) -> Response:
    context = new.context

    async def answer(spec: ExportSpec) -> Response:
        view = await context.backend.get(spec.id, new.principal.sub)
        location = context.status_url(spec.id)
        return _json(context.resource(view), 202, headers={"Location": location})

    return await new.start(EXPORTS_ROUTE, answer)


@router.get(
    f"{EXPORTS_ROUTE}/{{export_id}}",
    response_model=ExportResource,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
)
async def get_export(
    export_id: str, principal: PrincipalDep, context: ContextDep, protection: ProtectionDep
) -> Any:
    owner = protection.admin_or(principal)
    return _json(context.resource(await context.backend.get(export_id, owner)))


def _json(resource: ExportResource, status_code: int = 200, **kwargs: Any) -> Response:
    """The resource's JSON, encoded once by pydantic (a returned dict would be validated
    into the response model again and then encoded by ``json.dumps``: most of a read's CPU)."""
    body = resource.model_dump_json(by_alias=True, exclude_none=True)
    return Response(body, status_code, media_type="application/json", **kwargs)


@router.get(
    EXPORTS_ROUTE,
    response_model=ExportList,
    response_model_exclude_none=True,
    responses={**_PROBLEMS, 403: _PROBLEMS[401]},
    summary="The caller's exports (everyone's: `all=true`, admin scope), newest first",
)
async def list_exports(
    principal: PrincipalDep,
    context: ContextDep,
    protection: ProtectionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    all_owners: Annotated[bool, Query(alias="all")] = False,
) -> Any:
    owner = protection.admin_or(principal) if all_owners else principal.sub
    if all_owners and owner is not None:
        raise Forbidden("listing every user's exports needs the admin scope")
    page = await context.backend.list(owner, limit, cursor)
    items = [context.resource(view) for view in page.items]
    return ExportList(items=items, next_cursor=page.next_cursor).to_json_dict()


@router.delete(
    f"{EXPORTS_ROUTE}/{{export_id}}",
    response_model=ExportResource,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
    summary="Cancel an export: its process is stopped and no file is published; the export "
    "stays readable (phase Cancelled) until housekeeping removes old records",
)
async def cancel_export(
    export_id: str, principal: PrincipalDep, context: ContextDep, protection: ProtectionDep
) -> Any:
    owner = protection.admin_or(principal)
    return context.resource(await context.backend.cancel(export_id, owner)).to_json_dict()
