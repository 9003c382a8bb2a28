"""Handle links: downloads through the API that are checked, audited and revocable.

With ``link_mode: handle`` the link a client gets is ``/v1/exports/{id}/download`` (see
:mod:`exportd.security.links`). Every click comes here, and in this order:

1. who: the bearer of a token (the export's owner, or the admin scope), else the link's own
   ``expires``/``token`` pair; another user's export is 404, exactly as a missing one, and a
   wrong or expired link token is 403; no credential at all is 401;
2. revoked (``POST /v1/exports/{id}/revoke``)? 410, before anything else is revealed;
3. a file to give: the export Succeeded and its file is within ``file_retention_seconds``
   (else 409 while it runs or after it failed, 410 once housekeeping removed the file);
4. the download is written to the audit log (the state store's ``link_events`` and a structured
   log line on ``exportd.audit``) *before* the answer, so no download goes unrecorded;
5. a 307 to a storage URL signed for ``download_redirect_seconds`` only, never cached.

The caller's downloads and revocations are listed at ``GET /v1/exports/{id}/downloads``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import Headers

from exportd.api.auth import PRINCIPAL_SCOPE_KEY, REALM, PrincipalDep
from exportd.api.backends.base import ExportView
from exportd.api.context import EXPORTS_ROUTE, ApiContext, ContextDep
from exportd.api.models import Problem
from exportd.api.problems import problem_response
from exportd.api.protection import Protection, ProtectionDep
from exportd.api.ratelimit import client_ip, parse_networks
from exportd.contract.errors import Conflict, ExportdError, Forbidden
from exportd.contract.spec import CamelModel, Phase, utc_now
from exportd.security.links import LinkEvent
from exportd.security.tokens import Principal

router = APIRouter(tags=["links"])
audit = logging.getLogger("exportd.audit")

USER_AGENT_MAX = 256
_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


@dataclass
class Gone(ExportdError):
    """The link worked once and never will again (revoked, or its file removed)."""

    reason: str = "Gone"
    status: int = 410


class LinkRevocation(CamelModel):
    id: str
    revoked_at: datetime


class LinkEventView(CamelModel):
    kind: Literal["download", "revoke"]
    actor: str
    via: Literal["bearer", "link"]
    client_ip: str | None = None
    user_agent: str | None = None
    at: datetime


class LinkEventList(CamelModel):
    items: list[LinkEventView]


@router.get(
    f"{EXPORTS_ROUTE}/{{export_id}}/download",
    status_code=307,
    response_class=Response,
    responses={
        307: {"description": "Redirect to a short-lived storage URL of the file"},
        **{code: _PROBLEM for code in (401, 403, 404, 409, 410)},
    },
    summary="Download an export through its handle link (audited, revocable)",
)
async def download(
    export_id: str,
    request: Request,
    context: ContextDep,
    protection: ProtectionDep,
    expires: Annotated[int | None, Query(ge=0, le=2**40)] = None,
    token: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    via: Literal["bearer", "link"]
    if isinstance(principal, Principal):
        view = await context.backend.get(export_id, protection.admin_or(principal))
        actor, via = principal.sub, "bearer"
    elif expires is None or token is None:
        return problem_response(
            401,
            "a bearer token or a signed link is required",
            reason="Unauthenticated",
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
            instance=request.url.path,
        )
    else:
        view = await _view_by_link(context, export_id, expires, token)
        actor, via = "link", "link"
    await _refuse_revoked(protection, export_id)
    object_key = _file_of(context, view)
    event = _event(request, protection, export_id, "download", actor, via)
    await protection.store.add_link_event(event)
    _audit(event, view)
    url, _ = context.storage.signed_url(
        object_key,
        expires_in=context.settings.download_redirect_seconds,
        download_name=view.spec.file_name,
    )
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return RedirectResponse(url, status_code=307, headers=headers)


@router.post(
    f"{EXPORTS_ROUTE}/{{export_id}}/revoke",
    response_model=LinkRevocation,
    responses={code: _PROBLEM for code in (401, 404, 409)},
    summary="Revoke an export's handle links: from now on they answer 410",
)
async def revoke(
    export_id: str,
    request: Request,
    principal: PrincipalDep,
    context: ContextDep,
    protection: ProtectionDep,
) -> Any:
    view = await context.backend.get(export_id, protection.admin_or(principal))
    if context.settings.link_mode != "handle":
        raise Conflict(
            "links are signed storage URLs (link_mode direct) and cannot be revoked",
            reason="LinksNotRevocable",
        )
    revoked_at = await protection.store.revoked_at(export_id)
    if revoked_at is None:  # revoking twice keeps the first time
        event = _event(request, protection, export_id, "revoke", principal.sub, "bearer")
        await protection.store.add_link_event(event)
        _audit(event, view)
        revoked_at = event.at
    return LinkRevocation(id=export_id, revoked_at=revoked_at).to_json_dict()


@router.get(
    f"{EXPORTS_ROUTE}/{{export_id}}/downloads",
    response_model=LinkEventList,
    responses={code: _PROBLEM for code in (401, 404)},
    summary="The audit log of an export's handle links: downloads and revocations",
)
async def downloads(
    export_id: str, principal: PrincipalDep, context: ContextDep, protection: ProtectionDep
) -> Any:
    await context.backend.get(export_id, protection.admin_or(principal))
    events = await protection.store.link_events(export_id)
    items = [LinkEventView.model_validate(e.model_dump(exclude={"export_id"})) for e in events]
    return LinkEventList(items=items).to_json_dict()


async def _view_by_link(
    context: ApiContext, export_id: str, expires: int, token: str
) -> ExportView:
    view = await context.backend.get(export_id, None)
    if not context.handle_links.verify(export_id, view.spec.requested_by, expires, token):
        raise Forbidden("the link is invalid or has expired", reason="InvalidSignature")
    return view


async def _refuse_revoked(protection: Protection, export_id: str) -> None:
    revoked_at = await protection.store.revoked_at(export_id)
    if revoked_at is not None:
        raise Gone(f"this link was revoked at {revoked_at.isoformat()}", reason="LinkRevoked")


def _file_of(context: ApiContext, view: ExportView) -> str:
    status = view.status
    if status.phase is not Phase.SUCCEEDED or status.object_key is None:
        raise Conflict(f"the export is {status.phase}; there is no file", reason="NoFile")
    retention = timedelta(seconds=context.settings.file_retention_seconds)
    if status.completed_at is not None and status.completed_at + retention < utc_now():
        raise Gone("the file was removed after its retention time", reason="FileExpired")
    return status.object_key


def _event(
    request: Request,
    protection: Protection,
    export_id: str,
    kind: Literal["download", "revoke"],
    actor: str,
    via: Literal["bearer", "link"],
) -> LinkEvent:
    headers = Headers(scope=request.scope)
    trusted = parse_networks(protection.settings.trusted_proxies)
    peer = request.client.host if request.client else None
    agent = headers.get("user-agent")
    return LinkEvent(
        export_id=export_id,
        kind=kind,
        actor=actor,
        via=via,
        client_ip=client_ip(peer, headers.getlist("x-forwarded-for"), trusted),
        user_agent=agent[:USER_AGENT_MAX] if agent else None,
        at=utc_now(),
    )


def _audit(event: LinkEvent, view: ExportView) -> None:
    fields = event.model_dump(mode="json") | {"owner": view.spec.requested_by, "audit": event.kind}
    audit.info(
        "%s of export %s by %s", event.kind, event.export_id, event.actor, extra={"fields": fields}
    )
