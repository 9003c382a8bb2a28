"""Signed status reports: an export pod can report a result only for its own ExportRequest.

Export pods share one service account, which may patch the status of every ExportRequest in
the namespace (RBAC cannot name a resource created later), and the operator publishes whatever
file a request's ``status.result`` names. So the operator trusts a result only when:

- it is signed with the request's own report key: HMAC-SHA256 of the request's uid under a
  secret only the operator holds (``EXPORTD_REPORT_SECRET``), handed to the request's Job alone
  (``EXPORTD_REPORT_KEY``); a pod of another request knows another key;
- and its object key lies under ``exports/<request name>/``, where the exporter stores files.

Anything else is refused, logged, and posted as a Warning event on the request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

KEY_CONTEXT = b"exportd report key v1\x00"


def report_key(secret: str, uid: str) -> str:
    """The key of the request with ``uid``: what its Job signs its reports with."""
    return hmac.new(secret.encode(), KEY_CONTEXT + uid.encode(), hashlib.sha256).hexdigest()


def _canonical(export_id: str, result: Mapping[str, Any]) -> bytes:
    document = {"id": export_id, "result": result}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sign_result(key: str, export_id: str, result: Mapping[str, Any]) -> str:
    """The signature of ``result`` (as JSON, the way it is stored on the status)."""
    return hmac.new(key.encode(), _canonical(export_id, result), hashlib.sha256).hexdigest()


def under_request(object_key: str, name: str) -> bool:
    """Whether ``object_key`` names a file of the request ``name`` (no way out of its folder)."""
    prefix = f"exports/{name}/"
    rest = object_key[len(prefix) :]
    parts = rest.split("/")
    return object_key.startswith(prefix) and bool(rest) and ".." not in parts and "" not in parts


def refusal(
    secret: str | None,
    name: str,
    uid: str,
    result: Mapping[str, Any],
    signature: str | None,
) -> str | None:
    """Why the reported ``result`` is not trusted for request ``name``; None when it is."""
    object_key = str(result.get("objectKey") or "")
    if not under_request(object_key, name):
        return f"the reported object key {object_key!r} is not under exports/{name}/"
    if secret is None:
        return None  # no secret configured: only the object key is checked
    expected = sign_result(report_key(secret, uid), name, result)
    if signature is None or not hmac.compare_digest(signature, expected):
        return "the result is not signed with this request's report key"
    return None
