"""Downloads of finished files through signed, expiring links.

This route is public: the link's HMAC signature over the key and the expiry is the credential,
so a link can be handed to a browser or a mail client. A wrong, tampered or expired signature is
403 before storage is touched.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response, StreamingResponse

from exportd.api.context import ContextDep
from exportd.api.models import Problem
from exportd.contract.errors import Forbidden, NotFound
from exportd.contract.spec import format_of
from exportd.security.signing import DOWNLOAD_ROUTE
from exportd.storage.local import LocalStorage

router = APIRouter()

FALLBACK_MEDIA_TYPE = "application/octet-stream"


def content_disposition(file_name: str) -> str:
    """RFC 6266: an ASCII ``filename`` for old clients, ``filename*`` when the name needs it."""
    fallback = "".join(c if c.isascii() and c not in '"\\' else "_" for c in file_name)
    header = f'attachment; filename="{fallback}"'
    if fallback != file_name:
        header += f"; filename*=UTF-8''{quote(file_name, safe='')}"
    return header


def media_type_of(file_name: str) -> str:
    try:
        return format_of(file_name).content_type
    except ValueError:
        return FALLBACK_MEDIA_TYPE


@router.get(
    f"{DOWNLOAD_ROUTE}/{{key:path}}",
    response_class=Response,
    responses={
        200: {"description": "The file", "content": {"application/octet-stream": {}}},
        403: {"model": Problem, "content": {"application/problem+json": {}}},
        404: {"model": Problem, "content": {"application/problem+json": {}}},
    },
    summary="Download a finished export through its signed link",
)
async def download(
    key: str,
    context: ContextDep,
    expires: Annotated[int | None, Query(ge=0, le=2**40)] = None,
    signature: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    if expires is None or signature is None or not context.signer.verify(key, expires, signature):
        raise Forbidden("the link is invalid or has expired", reason="InvalidSignature")
    file_name = PurePosixPath(key).name
    headers = {
        "Content-Disposition": content_disposition(file_name),
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    }
    media_type = media_type_of(file_name)
    storage = context.storage
    if isinstance(storage, LocalStorage):
        path = storage.path_of(key)
        if not path.is_file():
            raise NotFound("the file no longer exists", reason="FileNotFound")
        return FileResponse(path, media_type=media_type, headers=headers)
    return StreamingResponse(storage.open_read(key), media_type=media_type, headers=headers)
