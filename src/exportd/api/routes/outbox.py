"""``/v1/outbox``: the development outbox's messages (embedded mode without an SMTP server).

Each user sees the messages of their own exports (everyone's with the admin scope); the
message itself is served as ``message/rfc822``, exactly as it would have been sent. With the
outbox off (an SMTP server is configured, or Kubernetes mode) the list says so and is empty.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from exportd.api.auth import PrincipalDep
from exportd.api.context import ContextDep
from exportd.api.models import Problem
from exportd.api.protection import ProtectionDep
from exportd.contract.errors import NotFound
from exportd.contract.spec import CamelModel
from exportd.delivery import outbox

router = APIRouter()
NOTE = "Development outbox: no SMTP server is configured, so e-mails are kept here, not sent."


class OutboxMessage(CamelModel):
    export_id: str
    to: str
    subject: str
    kept_at: str
    method: str
    bytes: int
    message_url: str


class OutboxList(CamelModel):
    enabled: bool
    note: str
    items: list[OutboxMessage]


@router.get(
    "/v1/outbox",
    response_model=OutboxList,
    summary="E-mails kept by the development outbox instead of sent (embedded mode, no SMTP)",
)
async def list_outbox(
    principal: PrincipalDep, context: ContextDep, protection: ProtectionDep
) -> Any:
    enabled = outbox.outbox_enabled(context.settings)
    found = outbox.entries(outbox.outbox_dir(context.settings), protection.admin_or(principal))
    items = [
        OutboxMessage(
            export_id=entry.export_id,
            to=entry.to,
            subject=entry.subject,
            kept_at=entry.kept_at.isoformat(),
            method=entry.method,
            bytes=entry.bytes,
            message_url=context.absolute(f"/v1/outbox/{entry.export_id}"),
        )
        for entry in (found if enabled else [])
    ]
    note = NOTE if enabled else "E-mails are sent by the configured SMTP server (no outbox)."
    return OutboxList(enabled=enabled, note=note, items=items).to_json_dict()


@router.get(
    "/v1/outbox/{export_id}",
    response_class=FileResponse,
    responses={404: {"model": Problem, "content": {"application/problem+json": {}}}},
    summary="One kept e-mail, as it would have been sent (message/rfc822)",
)
async def get_outbox_message(
    export_id: str, principal: PrincipalDep, context: ContextDep, protection: ProtectionDep
) -> FileResponse:
    directory = outbox.outbox_dir(context.settings)
    owner = protection.admin_or(principal)
    if outbox.outbox_enabled(context.settings):
        for entry in outbox.entries(directory, owner):
            if entry.export_id == export_id:
                return FileResponse(
                    outbox.message_path(directory, export_id),
                    media_type="message/rfc822",
                    filename=f"{export_id}.eml",
                )
    raise NotFound(f"no outbox message for export {export_id}")
