"""Signed, expiring download links for files served by exportd itself (local storage).

The one place that signs: an HMAC-SHA256 over the object key and the expiry time, expiry capped
at seven days whatever the caller asks for. Comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from exportd.settings import MAX_LINK_EXPIRY_SECONDS

DOWNLOAD_ROUTE = "/v1/files"


@dataclass(frozen=True)
class UrlSigner:
    secret: str
    public_url: str

    def signature(self, key: str, expires: int) -> str:
        mac = hmac.new(self.secret.encode(), f"{key}\n{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def sign(self, key: str, expires_in: int, *, now: float | None = None) -> tuple[str, int]:
        """The URL of ``key`` and its expiry (epoch seconds)."""
        seconds = max(1, min(expires_in, MAX_LINK_EXPIRY_SECONDS))
        expires = int(now if now is not None else time.time()) + seconds
        query = urlencode({"expires": expires, "signature": self.signature(key, expires)})
        path = quote(key, safe="/")
        return f"{self.public_url.rstrip('/')}{DOWNLOAD_ROUTE}/{path}?{query}", expires

    def verify(self, key: str, expires: int, signature: str, *, now: float | None = None) -> bool:
        current = now if now is not None else time.time()
        if expires < current or expires > current + MAX_LINK_EXPIRY_SECONDS + 60:
            return False
        return hmac.compare_digest(self.signature(key, expires), signature)
