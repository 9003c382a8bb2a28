"""Storage and e-mail delivery through the API, end to end: an embedded API whose exporter
children publish to S3 (moto) or GCS (gcp-storage-emulator) and send mail through aiosmtpd
(STARTTLS, a test CA, login), all on loopback.

What must hold: the seed ``POST /export`` answers exactly its contract for both return types;
the link downloads the very bytes the exporter recorded (SHA-256 equal); an e-mail carries the
file when it fits the configured limit and a working link when not; a delivery refused for good
is a problem+json with the mail server's reason; a transient refusal is retried by the runner
and the retry sends exactly one e-mail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from exportd.settings import CommonSettings, StorageConfig
from exportd.storage import storage_from_settings
from tests.integration.conftest import auth
from tests.integration.delivery_apps import (
    RECIPIENT,
    SMALL_BODY,
    embedded_api,
    fetch,
    sha256,
)
from tests.integration.server_fixtures import (  # noqa: F401
    moto_fixture,
    pki_fixture,
    smtp_fixture,
)
from tests.integration.storage_servers import (
    Inbox,
    Pki,
    ServerProcess,
    SmtpServer,
    fresh_s3_bucket,
    gcs_config,
    link_in_mail,
    parse_mail,
    smtp_config,
    start_gcs_emulator,
    start_smtp,
    write_service_account,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
GCS_BUCKET = "exports-api-test"
EMAIL_SENT = {"status": "success", "message": "The file has been sent to the provided email."}


@pytest.fixture(scope="module")
def gcs() -> Iterator[ServerProcess]:
    server = start_gcs_emulator(GCS_BUCKET)
    yield server
    server.stop()


def storage_of_kind(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    if kind == "s3":
        moto: ServerProcess = request.getfixturevalue("moto")
        return fresh_s3_bucket(moto.url)
    gcs: ServerProcess = request.getfixturevalue("gcs")
    credentials = write_service_account(tmp_path / "service-account.json")
    return gcs_config(gcs.url, GCS_BUCKET, credentials)


def stored_bytes(config: StorageConfig, key: str, tmp_path: Path) -> bytes:
    """The object as the store holds it, read with the storage plug-in itself."""
    storage = storage_from_settings(CommonSettings(storage=config, data_dir=tmp_path / "reader"))
    return b"".join(storage.open_read(key))


async def only_export(api: Any, owner: str = "alice") -> dict[str, Any]:
    listing = await api.client.get("/v1/exports", headers=auth(owner))
    [export] = listing.json()["items"]
    return dict(export)


@pytest.mark.parametrize("kind", ["s3", "gcs"])
async def test_export_lands_in_object_storage_and_its_link_downloads_the_same_bytes(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, sample_db: Path
) -> None:
    """POST /export answers exactly {status, url}; the URL is the store's own signed link; it
    downloads bytes whose SHA-256 is the one recorded in the export's status and the one of the
    object at exports/<id>/<fileName>. Direct storage links cannot be revoked (409)."""
    config = storage_of_kind(kind, request, tmp_path)
    async with embedded_api(tmp_path / "data", sample_db, storage=config) as api:
        response = await api.client.post("/export", json=SMALL_BODY, headers=auth("alice"))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"status", "url"} and body["status"] == "success"
        query = parse_qs(urlsplit(body["url"]).query)
        assert ("X-Amz-Signature" if kind == "s3" else "X-Goog-Signature") in query
        export = await only_export(api)
        key = f"exports/{export['id']}/menus.csv"
        downloaded = await fetch(body["url"])
        assert sha256(downloaded.content) == export["sha256"]
        assert sha256(stored_bytes(config, key, tmp_path)) == export["sha256"]
        assert export["bytes"] == len(downloaded.content)
        assert "attachment" in downloaded.headers["content-disposition"]
        assert downloaded.content.decode().count("\n") > 2  # a real CSV, not an error page
        revoke = await api.client.post(f"/v1/exports/{export['id']}/revoke", headers=auth("alice"))
        assert revoke.status_code == 409 and revoke.json()["reason"] == "LinksNotRevocable"


async def test_small_email_export_arrives_attached_and_post_export_says_so(
    moto: ServerProcess, smtp: SmtpServer, pki: Pki, tmp_path: Path, sample_db: Path
) -> None:
    """returnType email: the seed's e-mail answer exactly, one message to the requested
    address with the file attached (same SHA-256), and the export shows delivered True with a
    Delivered condition."""
    overrides = {
        "storage": fresh_s3_bucket(moto.url),
        "smtp": smtp_config(smtp.port, pki, attachment_limit_bytes=64 * 1024),
    }
    async with embedded_api(tmp_path / "data", sample_db, **overrides) as api:
        body = {**SMALL_BODY, "returnType": "email", "email": RECIPIENT}
        response = await api.client.post("/export", json=body, headers=auth("alice"))
        assert response.status_code == 200, response.text
        assert response.json() == EMAIL_SENT
        export = await only_export(api)
    [received] = smtp.inbox.messages
    assert received.recipients == (RECIPIENT,)
    [attachment] = list(parse_mail(received.content).iter_attachments())
    assert attachment.get_filename() == "menus.csv"
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes) and sha256(payload) == export["sha256"]
    assert export["delivered"] is True
    [condition] = export["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Delivered",
        "True",
        "Sent",
    )
    assert "url" not in export  # an e-mailed export hands out no link


async def test_email_export_over_the_limit_carries_a_link_to_the_same_bytes(
    moto: ServerProcess, smtp: SmtpServer, pki: Pki, tmp_path: Path, sample_db: Path
) -> None:
    """With a 256-byte limit the whole message would not fit: no attachment, a signed storage
    link in the body instead, and it downloads the recorded bytes."""
    overrides = {
        "storage": fresh_s3_bucket(moto.url),
        "smtp": smtp_config(smtp.port, pki, attachment_limit_bytes=256),
    }
    async with embedded_api(tmp_path / "data", sample_db, **overrides) as api:
        body = {**SMALL_BODY, "returnType": "email", "email": RECIPIENT}
        response = await api.client.post("/export", json=body, headers=auth("alice"))
        assert response.json() == EMAIL_SENT
        export = await only_export(api)
    [received] = smtp.inbox.messages
    url = link_in_mail(received.content)
    assert "X-Amz-Signature" in url
    assert sha256((await fetch(url)).content) == export["sha256"]


async def test_mail_server_without_starttls_fails_the_export_with_its_reason(
    moto: ServerProcess, pki: Pki, tmp_path: Path, sample_db: Path
) -> None:
    """A server that does not offer STARTTLS is refused (no plaintext fallback): POST /export
    is a problem+json naming the reason, the export is Failed after one attempt with a
    Delivered False condition, and nothing was sent."""
    plaintext = start_smtp()
    try:
        overrides = {
            "storage": fresh_s3_bucket(moto.url),
            "smtp": smtp_config(plaintext.port, pki),
        }
        async with embedded_api(tmp_path / "data", sample_db, **overrides) as api:
            body = {**SMALL_BODY, "returnType": "email", "email": RECIPIENT}
            response = await api.client.post("/export", json=body, headers=auth("alice"))
            assert response.status_code == 502, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["reason"] == "SmtpStartTlsUnavailable"
            export = await only_export(api)
    finally:
        plaintext.stop()
    assert export["phase"] == "Failed" and export["attempts"] == 1
    assert export["error"]["reason"] == "SmtpStartTlsUnavailable"
    [condition] = export["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Delivered",
        "False",
        "SmtpStartTlsUnavailable",
    )
    assert plaintext.inbox.messages == []


class RefuseFirstInbox(Inbox):
    """Answers the first message with 451 (try again later), then accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.refused == 0:
            self.refused += 1
            return "451 4.3.0 try again later"
        return await super().handle_DATA(server, session, envelope)


async def test_transient_smtp_refusal_is_retried_and_exactly_one_email_arrives(
    moto: ServerProcess, pki: Pki, tmp_path: Path, sample_db: Path
) -> None:
    """The first exporter attempt stores the file, is refused 451 (one SMTP attempt allowed)
    and exits transient, releasing its claim; the runner's second attempt finds the file
    already stored and sends: one object, one e-mail, two attempts, delivered."""
    inbox = RefuseFirstInbox()
    server = start_smtp(starttls_context=pki.server_context, require_auth=True, inbox=inbox)
    config = fresh_s3_bucket(moto.url)
    try:
        overrides = {"storage": config, "smtp": smtp_config(server.port, pki, max_attempts=1)}
        async with embedded_api(tmp_path / "data", sample_db, **overrides) as api:
            body = {**SMALL_BODY, "returnType": "email", "email": RECIPIENT}
            response = await api.client.post("/export", json=body, headers=auth("alice"))
            assert response.json() == EMAIL_SENT, response.text
            export = await only_export(api)
    finally:
        server.stop()
    assert inbox.refused == 1 and len(inbox.messages) == 1
    assert export["attempts"] == 2 and export["delivered"] is True
    storage = storage_from_settings(CommonSettings(storage=config, data_dir=tmp_path / "r"))
    assert storage.exists(f"exports/{export['id']}/menus.csv")
