"""Live progress of one export as server-sent events: ``GET /v1/exports/{id}/events``.

This is the working answer to "how do realtime features work over an API": one plain HTTP
response that stays open, the same for the web page, ``curl -N`` or any other client, behind the
same bearer token and ownership rule as every other route (another user's export is 404, before
the stream starts).

The stream, in ``text/event-stream`` framing:

- ``retry: <ms>`` first, the reconnection delay a client should use.
- An ``event: status`` whose ``data`` is the export as ``GET /v1/exports/{id}`` shows it, plus
  ``percent`` (0 while waiting, 100 when Succeeded; absent while Running, since the total row
  count is not known in advance and ``rows`` is the measure of progress, and absent after a
  failure or a cancel), on connect and after every change.
- ``: heartbeat`` comments after ``events_heartbeat_seconds`` without a change, so proxies keep
  the connection and a client that left is noticed.
- The stream ends right after the event of a terminal phase.

Event ids name the state, not a position in a log: a digest of the status fields (not of the
link, which is signed afresh on every read). Any replica names the same state the same way, so
a client reconnecting with ``Last-Event-ID`` gets nothing it already has: no repeat of its last
state, then every newer one; a client that saw the terminal event gets an empty, ended stream.

The stream sleeps on the backend's change notifications (``wait_for_change``), never on a timer
loop over the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from exportd.api.auth import PrincipalDep
from exportd.api.context import EXPORTS_ROUTE, ApiContext, ContextDep
from exportd.api.models import Problem
from exportd.contract.errors import NotFound
from exportd.contract.spec import ExportStatus, Phase

router = APIRouter()

EVENT_STREAM_MEDIA_TYPE = "text/event-stream"
RETRY_MILLISECONDS = 2000
LAST_EVENT_ID_MAX = 128
HEARTBEAT = ": heartbeat\n\n"
_WAITING_PHASES = frozenset({Phase.PENDING, Phase.QUEUED})
# Re-signed on every read: part of what is shown, not of the state an event id names.
_NOT_STATE = frozenset({"url", "expires_at"})
_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}} for code in (401, 404)
}


def state_id(status: ExportStatus) -> str:
    """The event id of a status: equal statuses, equal ids, on every replica."""
    state = status.model_dump(mode="json", exclude=set(_NOT_STATE))
    canonical = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def percent_of(phase: Phase) -> int | None:
    if phase is Phase.SUCCEEDED:
        return 100
    if phase in _WAITING_PHASES:
        return 0
    return None


def format_event(event_id: str, event: str, data: dict[str, Any]) -> str:
    """One SSE message; ``data`` is compact JSON, which never contains a line break."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event_id}\nevent: {event}\ndata: {payload}\n\n"


def _status_event(view_data: dict[str, Any], status: ExportStatus) -> str:
    percent = percent_of(status.phase)
    data = view_data if percent is None else {**view_data, "percent": percent}
    return format_event(state_id(status), "status", data)


async def _events(
    context: ApiContext, export_id: str, owner: str, last_event_id: str | None
) -> AsyncIterator[str]:
    heartbeat = context.settings.events_heartbeat_seconds
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    sent = last_event_id
    try:
        view = await context.backend.get(export_id, owner)
        while True:
            if state_id(view.status) != sent:
                yield _status_event(context.resource(view).to_json_dict(), view.status)
                sent = state_id(view.status)
            if view.status.phase.is_terminal:
                return
            seen = view.status
            view = await context.backend.wait_for_change(export_id, owner, seen, heartbeat)
            if view.status == seen:
                yield HEARTBEAT
    except NotFound:
        return  # the record is gone (housekeeping): nothing more will ever change


@router.get(
    f"{EXPORTS_ROUTE}/{{export_id}}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {EVENT_STREAM_MEDIA_TYPE: {}}, "description": "The event stream."},
        **_PROBLEMS,
    },
    summary="Follow an export: server-sent events of its phase and progress until it ends",
)
async def export_events(
    export_id: str,
    principal: PrincipalDep,
    context: ContextDep,
    last_event_id: Annotated[str | None, Header(max_length=LAST_EVENT_ID_MAX)] = None,
) -> StreamingResponse:
    await context.backend.get(export_id, principal.sub)  # 404 now, not inside the stream
    return StreamingResponse(
        _events(context, export_id, principal.sub, last_event_id),
        media_type=EVENT_STREAM_MEDIA_TYPE,
        headers=_STREAM_HEADERS,
    )
