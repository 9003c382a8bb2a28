"""Handle links: stable API download links that can be audited and revoked.

With ``link_mode: handle`` nobody is handed a storage URL that keeps working whatever happens.
The link is ``<public_url>/v1/exports/<id>/download`` and the API decides at every click: it
checks the caller, records the download, answers 410 once the link was revoked, and only then
redirects to a fresh storage URL that lives ``download_redirect_seconds``.

The caller is either the bearer of a token for the export's owner, or anyone holding a link with
``?expires=...&token=...``: an HMAC over the export id, its owner and the expiry. Its key is
derived from ``signing_key`` for this purpose alone, so a handle token can never pass for the
signature of a file link (:mod:`exportd.security.signing`) or the other way round. The exporter
signs
these links too (the e-mail of a large export carries one), so this module is core, not API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict

from exportd.settings import MAX_LINK_EXPIRY_SECONDS, CommonSettings

DOWNLOAD_SUFFIX = "/download"
EXPORTS_PREFIX = "/v1/exports/"
_KEY_LABEL = b"exportd handle links v1"


def download_path(export_id: str) -> str:
    return f"{EXPORTS_PREFIX}{quote(export_id, safe='')}{DOWNLOAD_SUFFIX}"


def is_download_path(path: str) -> bool:
    """``/v1/exports/<one segment>/download``: the route that checks its own credentials."""
    if not (path.startswith(EXPORTS_PREFIX) and path.endswith(DOWNLOAD_SUFFIX)):
        return False
    export_id = path[len(EXPORTS_PREFIX) : -len(DOWNLOAD_SUFFIX)]
    return bool(export_id) and "/" not in export_id


@dataclass(frozen=True)
class HandleLinks:
    secret: str
    public_url: str

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> HandleLinks:
        return cls(settings.secret("signing_key"), settings.public_url)

    def _key(self) -> bytes:
        return hmac.new(self.secret.encode(), _KEY_LABEL, hashlib.sha256).digest()

    def token(self, export_id: str, owner: str, expires: int) -> str:
        message = "\x00".join((export_id, owner, str(expires))).encode()
        mac = hmac.new(self._key(), message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def url(
        self, export_id: str, owner: str, expires_in: int, *, now: float | None = None
    ) -> tuple[str, int]:
        """The export's download link carrying a token, and its expiry (epoch seconds)."""
        seconds = max(1, min(expires_in, MAX_LINK_EXPIRY_SECONDS))
        expires = int(now if now is not None else time.time()) + seconds
        query = urlencode({"expires": expires, "token": self.token(export_id, owner, expires)})
        return f"{self.public_url.rstrip('/')}{download_path(export_id)}?{query}", expires

    def verify(
        self, export_id: str, owner: str, expires: int, token: str, *, now: float | None = None
    ) -> bool:
        current = now if now is not None else time.time()
        if expires < current or expires > current + MAX_LINK_EXPIRY_SECONDS + 60:
            return False
        return hmac.compare_digest(self.token(export_id, owner, expires), token)


class LinkEvent(BaseModel):
    """One line of the download audit log: a download through a handle link, or a revocation.

    ``actor`` is the bearer's ``sub``, or ``link`` for whoever held a token link."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    export_id: str
    kind: Literal["download", "revoke"]
    actor: str
    via: Literal["bearer", "link"]
    client_ip: str | None = None
    user_agent: str | None = None
    at: datetime
