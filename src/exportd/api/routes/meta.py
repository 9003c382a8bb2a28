"""The service root and the public view of the export catalog (probes: ``api.probes``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from exportd import __version__
from exportd.api.auth import PrincipalDep
from exportd.api.context import ContextDep
from exportd.api.models import ExportTypeList

router = APIRouter()


# Shadowed by the web page (routes/page.py, included first), so kept out of the OpenAPI document,
# which must describe what GET / really answers.
@router.get(
    "/", summary="What this service is and where its documents are", include_in_schema=False
)
async def root() -> dict[str, str]:
    return {"name": "exportd", "version": __version__, "docs": "/docs", "openapi": "/openapi.json"}


@router.get(
    "/v1/export-types",
    response_model=ExportTypeList,
    summary="The export types a caller may request, with each type's variable schema",
)
async def export_types(_principal: PrincipalDep, context: ContextDep) -> Any:
    types = context.catalog.types
    # The catalog's own order: its author puts the type most people want first.
    return ExportTypeList(items=[t.public_view(name) for name, t in types.items()])
