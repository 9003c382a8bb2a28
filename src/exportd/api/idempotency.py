"""``Idempotency-Key`` on the create routes, with Stripe's semantics.

A client that may retry a ``POST /v1/exports`` or ``POST /export`` (timeout, dropped
connection) sends a unique key with it. Within ``idempotency_ttl_seconds`` (24 h):

- the same key with the same request returns the first response again (status, body,
  ``Location``), marked ``Idempotent-Replayed: true``; no second export, no second debit;
- the same key with another request (another body, or the other route) -> 422 naming the header;
- the same key while the first request is still being answered (concurrent duplicates, or
  ``POST /export`` waiting for the file) -> 409 ``IdempotencyKeyInProgress`` with the first
  request's ``exportId`` and ``Retry-After: 1``; a retry then gets the replay. Every duplicate
  thus names the same export, and only one is charged.

Keys belong to the caller (two users may pick the same key), live in the state store next to the
credits, and are claimed in the transaction that creates the export. The export's id is derived
from the caller and the key, so in Kubernetes mode the key names the ExportRequest. Only requests
that created an export store a response: a refusal (402, 503, 422) leaves the key unused, so the
client may retry the same key once it has credit again.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Header
from starlette.responses import Response

from exportd.contract.spec import ExportRequestBody
from exportd.store.admission import IDEMPOTENCY_HEADER, StoredResponse

REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MAX_LENGTH = 255
_KEPT_HEADERS = ("location",)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        min_length=1,
        max_length=KEY_MAX_LENGTH,
        pattern=r"^[\x21-\x7e]+$",
        description="A unique key (e.g. a UUID) making retries of this request safe: the same "
        "key and body within 24 h return the first response and create nothing.",
    ),
]


def canonical_body(body: ExportRequestBody) -> str:
    """The request as the API understood it, in a stable form (sorted keys, defaults filled)."""
    return json.dumps(
        body.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )


def stored_response(response: Response) -> StoredResponse:
    headers = {name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers}
    headers["content-type"] = response.headers.get("content-type", "application/json")
    return StoredResponse(
        status=response.status_code, body=bytes(response.body).decode(), headers=headers
    )


def replayed(stored: StoredResponse) -> Response:
    headers = {k: v for k, v in stored.headers.items() if k != "content-type"}
    headers[REPLAYED_HEADER] = "true"
    media_type = stored.headers.get("content-type", "application/json")
    return Response(
        content=stored.body, status_code=stored.status, headers=headers, media_type=media_type
    )
