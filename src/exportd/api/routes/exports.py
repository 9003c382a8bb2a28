"""Export routes: the seed ``POST /export`` and the ``/v1/exports`` resource.

Order of work for a new export: the token was checked by the middleware; the body is validated
(422 naming the field); delivery and variables are checked against settings and the catalog
(422); only then is a record created and handed to the backend.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from exportd.api.auth import PrincipalDep
from exportd.api.context import EXPORTS_ROUTE, ApiContext, ContextDep
from exportd.api.models import (
    AcceptedResponse,
    ExportList,
    ExportResource,
    Problem,
    SyncEmailResponse,
    SyncUrlResponse,
)
from exportd.api.problems import problem_response
from exportd.spec import ExportRequestBody, ExportSpec, ExportStatus, Phase, ReturnType

router = APIRouter()

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (401, 404, 409, 422, 500)
}
# A failed export seen by POST /export: which status tells the client the most.
_FAILURE_STATUS = {
    "InvalidInput": 422,
    "InvalidVariables": 422,
    "UnknownExportType": 422,
    "DeadlineExceeded": 504,
    "Interrupted": 503,
    "TransientFailure": 503,
}


async def _submit(context: ApiContext, body: ExportRequestBody, owner: str) -> ExportSpec:
    context.check_request(body)
    spec = ExportSpec.from_request(body, requested_by=owner)
    await context.backend.submit(spec)
    return spec


@router.post(
    "/export",
    response_model=SyncUrlResponse | SyncEmailResponse,
    responses={202: {"model": AcceptedResponse}, **_PROBLEMS},
    summary="Export and wait: the link (or e-mail) when done, 202 past the wait",
)
async def export_and_wait(
    body: ExportRequestBody, principal: PrincipalDep, context: ContextDep
) -> JSONResponse:
    spec = await _submit(context, body, principal.sub)
    status = await context.backend.wait_until_terminal(spec.id, context.settings.sync_wait_seconds)
    if status.phase is Phase.SUCCEEDED:
        return JSONResponse(_success_body(context, spec, status))
    if status.phase.is_terminal:
        return _failure(spec, status)
    accepted = AcceptedResponse(id=spec.id, status_url=context.status_url(spec.id))
    return JSONResponse(accepted.to_json_dict(), status_code=202)


def _success_body(context: ApiContext, spec: ExportSpec, status: ExportStatus) -> dict[str, Any]:
    if spec.return_type is ReturnType.EMAIL:
        return SyncEmailResponse().to_json_dict()
    assert status.object_key is not None
    url, _ = context.download_url(status.object_key, spec.file_name)
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
async def create_export(
    body: ExportRequestBody, principal: PrincipalDep, context: ContextDep
) -> JSONResponse:
    spec = await _submit(context, body, principal.sub)
    view = await context.backend.get(spec.id, principal.sub)
    location = context.status_url(spec.id)
    return JSONResponse(
        context.resource(view).to_json_dict(), status_code=202, headers={"Location": location}
    )


@router.get(
    f"{EXPORTS_ROUTE}/{{export_id}}",
    response_model=ExportResource,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
)
async def get_export(export_id: str, principal: PrincipalDep, context: ContextDep) -> Any:
    return context.resource(await context.backend.get(export_id, principal.sub)).to_json_dict()


@router.get(
    EXPORTS_ROUTE,
    response_model=ExportList,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
    summary="The caller's exports, newest first",
)
async def list_exports(
    principal: PrincipalDep,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Any:
    page = await context.backend.list(principal.sub, limit, cursor)
    items = [context.resource(view) for view in page.items]
    return ExportList(items=items, next_cursor=page.next_cursor).to_json_dict()


@router.delete(
    f"{EXPORTS_ROUTE}/{{export_id}}",
    response_model=ExportResource,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
    summary="Cancel an export: its process is stopped and no file is published",
)
async def cancel_export(export_id: str, principal: PrincipalDep, context: ContextDep) -> Any:
    return context.resource(await context.backend.cancel(export_id, principal.sub)).to_json_dict()
