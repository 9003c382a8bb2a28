"""The development outbox: embedded mode with no SMTP server keeps e-mails instead of sending.

What must hold: the seed's e-mail request answers exactly the seed's message; the whole message,
file attached, is kept under DATA_DIR/outbox; the export says where it went (``KeptInOutbox``);
``/v1/outbox`` lists it, marked as development, to its owner only, and serves it as sent.
"""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from exportd.settings import ApiSettings, Backend, SmtpConfig
from tests.integration.conftest import auth
from tests.integration.delivery_apps import RECIPIENT, embedded_api, sha256

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
SEED_EMAIL_REQUEST = {
    "type": "userExport",
    "returnType": "email",
    "email": RECIPIENT,
    "fileName": "myexport.xlsx",
    "variables": {"x": 1, "y": 2},
}
SEED_EMAIL_ANSWER = {
    "status": "success",
    "message": "The file has been sent to the provided email.",
}


def parsed(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_seed_email_request_lands_in_the_outbox(tmp_path: Path, sample_db: Path) -> None:
    """No smtp settings at all: POST /export with the seed's e-mail request answers exactly
    the seed's message; DATA_DIR/outbox holds one message to the requested address with
    myexport.xlsx attached (the recorded SHA-256); the export is delivered with reason
    KeptInOutbox; alice's /v1/outbox lists it with the development note and serves the same
    bytes; bob sees no message and gets 404 for alice's."""
    data_dir = tmp_path / "data"
    async with embedded_api(data_dir, sample_db) as api:
        response = await api.client.post("/export", json=SEED_EMAIL_REQUEST, headers=auth("alice"))
        assert response.status_code == 200, response.text
        assert response.json() == SEED_EMAIL_ANSWER
        [export] = (await api.client.get("/v1/exports", headers=auth("alice"))).json()["items"]
        listing = (await api.client.get("/v1/outbox", headers=auth("alice"))).json()
        [item] = listing["items"]
        served = await api.client.get(item["messageUrl"], headers=auth("alice"))
        bob_list = (await api.client.get("/v1/outbox", headers=auth("bob"))).json()
        bob_get = await api.client.get(item["messageUrl"], headers=auth("bob"))
    [kept] = (data_dir / "outbox").glob("*.eml")
    message = parsed(kept.read_bytes())
    assert message["To"] == RECIPIENT
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "myexport.xlsx"
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes) and sha256(payload) == export["sha256"]
    assert export["delivered"] is True
    [condition] = export["conditions"]
    assert (condition["status"], condition["reason"]) == ("True", "KeptInOutbox")
    assert str(kept) in condition["message"] and "nothing was sent" in condition["message"]
    assert listing["enabled"] is True and listing["note"].startswith("Development outbox")
    assert (item["exportId"], item["to"], item["method"]) == (export["id"], RECIPIENT, "attachment")
    assert served.status_code == 200 and served.content == kept.read_bytes()
    assert served.headers["content-type"].startswith("message/rfc822")
    assert bob_list["items"] == [] and bob_get.status_code == 404
    assert bob_get.json()["reason"] == "NotFound"


def test_outbox_is_on_only_in_embedded_mode_without_an_smtp_host() -> None:
    """The default: on for embedded without smtp.host; off with a host, in Kubernetes mode, or
    when turned off explicitly."""
    assert ApiSettings().smtp.outbox is True
    assert ApiSettings(smtp=SmtpConfig(host="smtp.example.com")).smtp.outbox is False
    assert ApiSettings(backend=Backend.KUBERNETES).smtp.outbox is False
    assert ApiSettings(smtp=SmtpConfig(outbox=False)).smtp.outbox is False
