"""Probes, the service root and the public view of the export catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from exportd import __version__
from exportd.api.auth import PrincipalDep
from exportd.api.context import ContextDep
from exportd.api.models import ExportTypeList, Health, Problem
from exportd.api.problems import problem_response

router = APIRouter()


@router.get("/", summary="What this service is and where its documents are")
async def root() -> dict[str, str]:
    return {"name": "exportd", "version": __version__, "docs": "/docs", "openapi": "/openapi.json"}


@router.get("/livez", response_model=Health, summary="The process is alive")
async def livez() -> Any:
    return Health(status="ok").to_json_dict()


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Problem, "content": {"application/problem+json": {}}}},
    summary="The state store answers and the backend runs",
)
async def readyz(context: ContextDep) -> Any:
    if not await context.backend.ready():
        return problem_response(503, "the backend is not ready", reason="NotReady")
    return Health(status="ready").to_json_dict()


@router.get(
    "/v1/export-types",
    response_model=ExportTypeList,
    summary="The export types a caller may request, with each type's variable schema",
)
async def export_types(_principal: PrincipalDep, context: ContextDep) -> Any:
    types = context.catalog.types
    return ExportTypeList(items=[types[name].public_view(name) for name in sorted(types)])
