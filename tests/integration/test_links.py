"""Handle links (``link_mode: handle``) against an embedded API publishing to S3 (moto):
``/v1/exports/{id}/download`` checks the caller or the link's token, records every download in
the audit log (state store and ``exportd.audit`` log), and redirects to a storage URL that lives
``download_redirect_seconds``; a revoked link answers 410; another user's link is 404. Also:
the e-mail of a large export carries the handle link, link expiry above seven days stops the
server at start-up, and the PostgreSQL store keeps link events like the SQLite one.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from exportd.security.links import HandleLinks, LinkEvent
from exportd.settings import MAX_LINK_EXPIRY_SECONDS
from exportd.store.postgres import PostgresStateStore
from tests.integration.conftest import Api, auth
from tests.integration.delivery_apps import (
    RECIPIENT,
    SMALL_BODY,
    embedded_api,
    fetch,
    fresh_s3_bucket,
    parse_mail,
    sha256,
    smtp_config,
)
from tests.integration.pgstate import throwaway_schema
from tests.integration.storage_servers import (
    Pki,
    ServerProcess,
    child_env,
    free_port,
    make_pki,
    start_moto,
    start_smtp,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
REDIRECT_SECONDS = 30


@pytest.fixture(scope="module")
def moto() -> Iterator[ServerProcess]:
    server = start_moto()
    yield server
    server.stop()


def handle_settings(moto: ServerProcess, **overrides: Any) -> dict[str, Any]:
    return {
        "storage": fresh_s3_bucket(moto.url),
        "link_mode": "handle",
        "download_redirect_seconds": REDIRECT_SECONDS,
        **overrides,
    }


async def export_link(api: Api) -> tuple[str, str]:
    """Alice's finished export: its id and the link POST /export answered."""
    response = await api.client.post("/export", json=SMALL_BODY, headers=auth("alice"))
    assert response.status_code == 200, response.text
    url = response.json()["url"]
    match = re.fullmatch(r"http://testserver/v1/exports/([a-z0-9-]+)/download\?(.+)", url)
    assert match is not None, url
    return match.group(1), url


def audit_rows(api: Api) -> list[tuple[str, str, str, str]]:
    """The audit table, read straight from the state store's file."""
    with sqlite3.connect(api.settings.state_db_path) as conn:
        rows = conn.execute("SELECT export_id, kind, actor, via FROM link_events ORDER BY id")
        return [tuple(row) for row in rows]


async def test_handle_link_redirects_to_a_short_lived_storage_url_and_records_the_download(
    moto: ServerProcess, tmp_path: Path, sample_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a bearer token the link's token lets the download through; with the owner's
    bearer token the bare path does. Each answer is a no-store 307 to a storage URL signed for
    download_redirect_seconds that downloads the recorded bytes, and each is in the audit log
    (store table, downloads listing, exportd.audit log line) with who and how."""
    caplog.set_level(logging.INFO, logger="exportd.audit")
    async with embedded_api(tmp_path / "data", sample_db, **handle_settings(moto)) as api:
        export_id, url = await export_link(api)
        shown = (await api.client.get(f"/v1/exports/{export_id}", headers=auth("alice"))).json()
        assert shown["url"].startswith(f"http://testserver/v1/exports/{export_id}/download?")
        by_link = await api.client.get(url, headers={"User-Agent": "mail-client/1"})
        by_bearer = await api.client.get(f"/v1/exports/{export_id}/download", headers=auth("alice"))
        for answer in (by_link, by_bearer):
            assert answer.status_code == 307, answer.text
            assert answer.headers["cache-control"] == "no-store"
            location = answer.headers["location"]
            assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == [str(REDIRECT_SECONDS)]
            assert sha256((await fetch(location)).content) == shown["sha256"]
        listing = await api.client.get(f"/v1/exports/{export_id}/downloads", headers=auth("alice"))
        events = listing.json()["items"]
        assert [(e["kind"], e["actor"], e["via"]) for e in events] == [
            ("download", "link", "link"),
            ("download", "alice", "bearer"),
        ]
        assert events[0]["userAgent"] == "mail-client/1"
        assert audit_rows(api) == [
            (export_id, "download", "link", "link"),
            (export_id, "download", "alice", "bearer"),
        ]
    logged = [r for r in caplog.records if r.name == "exportd.audit"]
    assert [r.fields["via"] for r in logged] == ["link", "bearer"]  # type: ignore[attr-defined]
    assert {r.fields["export_id"] for r in logged} == {export_id}  # type: ignore[attr-defined]


async def test_revoked_link_answers_410_to_everyone(
    moto: ServerProcess, tmp_path: Path, sample_db: Path
) -> None:
    """After POST /revoke the link and the owner's bearer download both answer 410
    LinkRevoked; revoking again keeps the first time; the revocation is in the audit log and
    no download was recorded after it."""
    async with embedded_api(tmp_path / "data", sample_db, **handle_settings(moto)) as api:
        export_id, url = await export_link(api)
        assert (await api.client.get(url)).status_code == 307
        revoke = f"/v1/exports/{export_id}/revoke"
        first = await api.client.post(revoke, headers=auth("alice"))
        assert first.status_code == 200, first.text
        assert first.json()["id"] == export_id
        for attempt in (
            await api.client.get(url),
            await api.client.get(f"/v1/exports/{export_id}/download", headers=auth("alice")),
        ):
            assert attempt.status_code == 410
            assert attempt.headers["content-type"] == "application/problem+json"
            assert attempt.json()["reason"] == "LinkRevoked"
        again = await api.client.post(revoke, headers=auth("alice"))
        assert again.json()["revokedAt"] == first.json()["revokedAt"]
        assert [row[1:] for row in audit_rows(api)] == [
            ("download", "link", "link"),
            ("revoke", "alice", "bearer"),
        ]


async def test_another_users_link_is_404_and_bad_credentials_are_refused(
    moto: ServerProcess, tmp_path: Path, sample_db: Path
) -> None:
    """Bob, with his own bearer token, gets 404 for Alice's download (even holding her link),
    revoke and audit log, exactly as for an id that does not exist; a tampered or expired link
    token is 403, no credential at all 401; none of it is recorded and Alice's link still
    works afterwards."""
    async with embedded_api(tmp_path / "data", sample_db, **handle_settings(moto)) as api:
        export_id, url = await export_link(api)
        base = f"/v1/exports/{export_id}"
        bobs = [
            await api.client.get(f"{base}/download", headers=auth("bob")),
            await api.client.get(url, headers=auth("bob")),
            await api.client.post(f"{base}/revoke", headers=auth("bob")),
            await api.client.get(f"{base}/downloads", headers=auth("bob")),
            await api.client.get("/v1/exports/exp-nothere/download", headers=auth("bob")),
        ]
        assert [r.status_code for r in bobs] == [404] * 5
        signer = HandleLinks(api.settings.secret("signing_key"), api.settings.public_url)
        past = time.time() - 2 * 3600
        expired, _ = signer.url(export_id, "alice", 3600, now=past)
        forged, _ = signer.url(export_id, "bob", 3600)  # a token for the wrong owner
        tampered = re.sub(r"token=[^&]+", "token=AAAA" + url.rsplit("token=", 1)[1][4:], url)
        for bad in (expired, forged, tampered):
            refused = await api.client.get(bad)
            assert refused.status_code == 403 and refused.json()["reason"] == "InvalidSignature"
        anonymous = await api.client.get(f"{base}/download")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert audit_rows(api) == []
        assert (await api.client.get(url)).status_code == 307


async def test_email_of_a_large_export_carries_the_handle_link(
    moto: ServerProcess, tmp_path: Path, sample_db: Path
) -> None:
    """In handle mode an e-mail too large to attach links to the API, not to the store: the
    link redirects to the file (same SHA-256) and the download is recorded."""
    pki: Pki = make_pki(tmp_path)
    server = start_smtp(starttls_context=pki.server_context, require_auth=True)
    try:
        smtp = smtp_config(server.port, pki, attachment_limit_bytes=256)
        async with embedded_api(
            tmp_path / "data", sample_db, **handle_settings(moto, smtp=smtp)
        ) as api:
            body = {**SMALL_BODY, "returnType": "email", "email": RECIPIENT}
            response = await api.client.post("/export", json=body, headers=auth("alice"))
            assert response.status_code == 200, response.text
            [received] = server.inbox.messages
            text = parse_mail(received.content).get_body(("plain",))
            assert text is not None
            [url] = re.findall(r"http://\S+", text.get_content())
            assert url.startswith("http://testserver/v1/exports/") and "token=" in url
            answer = await api.client.get(url)
            assert answer.status_code == 307, answer.text
            listing = await api.client.get("/v1/exports", headers=auth("alice"))
            [export] = listing.json()["items"]
            assert sha256((await fetch(answer.headers["location"])).content) == export["sha256"]
            assert [row[1:] for row in audit_rows(api)] == [("download", "link", "link")]
    finally:
        server.stop()


def test_link_expiry_above_seven_days_stops_the_server_at_start_up(tmp_path: Path) -> None:
    """``exportd serve`` with EXPORTD_LINK_EXPIRY_SECONDS one second over seven days exits
    non-zero naming the limit, before it listens; exactly seven days is accepted by the same
    settings class."""
    env = child_env(
        {
            "EXPORTD_DATA_DIR": str(tmp_path / "data"),
            "EXPORTD_PORT": str(free_port()),
            "EXPORTD_LINK_EXPIRY_SECONDS": str(MAX_LINK_EXPIRY_SECONDS + 1),
        }
    )
    command = [sys.executable, "-c", "import sys; from exportd.cli import main; sys.exit(main())"]
    done = subprocess.run(
        [*command, "serve"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0
    assert "link expiry above 7 days" in done.stderr
    assert "Uvicorn running" not in done.stderr


async def test_postgres_store_keeps_downloads_and_revocations() -> None:
    """The PostgreSQL state store (migration 3) records link events and reports the first
    revocation, like the SQLite store behind the API tests above."""
    with throwaway_schema() as dsn:
        store = PostgresStateStore(dsn)
        await store.open()
        try:
            assert await store.revoked_at("exp-a") is None
            moments = [datetime(2030, 1, 1, hour, tzinfo=UTC) for hour in (1, 2, 3)]
            events = [
                LinkEvent(export_id="exp-a", kind="download", actor="link", via="link",
                          client_ip="127.0.0.1", user_agent="curl", at=moments[0]),
                LinkEvent(export_id="exp-a", kind="revoke", actor="alice", via="bearer",
                          at=moments[1]),
                LinkEvent(export_id="exp-a", kind="revoke", actor="admin", via="bearer",
                          at=moments[2]),
                LinkEvent(export_id="exp-b", kind="download", actor="bob", via="bearer",
                          at=moments[0]),
            ]  # fmt: skip
            for event in events:
                await store.add_link_event(event)
            assert await store.link_events("exp-a") == events[:3]
            assert await store.revoked_at("exp-a") == moments[1]
            assert await store.revoked_at("exp-b") is None
        finally:
            await store.close()
