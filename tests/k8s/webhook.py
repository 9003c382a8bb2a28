"""The apiserver's side of a validating admission webhook, for the test apiserver: on create of
an ExportRequest it sends the AdmissionReview a real apiserver sends (admission.k8s.io/v1, over
HTTPS verified against the webhook's CA) and refuses the object the way the apiserver does when
the webhook denies it: the webhook's status code, and ``admission webhook "<name>" denied the
request: <message>``. Nothing is stored then."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from exportd.contract import exportrequest as er
from tests.k8s.emulator import AdmissionHook, ApiError

WEBHOOK_NAME = "validate.exportrequests.exportd.dev"


def validating_webhook(url: str, ca_file: Path) -> AdmissionHook:
    context = ssl.create_default_context(cafile=str(ca_file))

    async def admit(resource: str, body: dict[str, Any]) -> None:
        if resource != f"{er.GROUP}/{er.VERSION}/{er.PLURAL}":
            return
        meta = body.get("metadata") or {}
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": er.GROUP, "version": er.VERSION, "kind": er.KIND},
                "resource": {"group": er.GROUP, "version": er.VERSION, "resource": er.PLURAL},
                "requestKind": {"group": er.GROUP, "version": er.VERSION, "kind": er.KIND},
                "requestResource": {
                    "group": er.GROUP,
                    "version": er.VERSION,
                    "resource": er.PLURAL,
                },
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "operation": "CREATE",
                "userInfo": {"username": "kubernetes-admin"},
                "object": body,
                "oldObject": None,
                "dryRun": False,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=review, ssl=context) as answer,
        ):
            answer.raise_for_status()
            response = (await answer.json())["response"]
        if response.get("allowed"):
            return
        status = response.get("status") or {}
        message = f'admission webhook "{WEBHOOK_NAME}" denied the request: {status.get("message")}'
        raise ApiError(int(status.get("code") or 400), str(status.get("reason") or ""), message)

    return admit
