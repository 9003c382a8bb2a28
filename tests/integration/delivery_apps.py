"""An embedded API on real storage and mail servers, for the delivery and handle-link tests.

The app is the real one (in-process ASGI, embedded backend, exporter child processes); only its
storage and SMTP settings point at the loopback servers of :mod:`tests.integration.storage_servers`
(moto for S3, gcp-storage-emulator for GCS, aiosmtpd with a test CA). Links the API hands out
for those stores are real presigned URLs, fetched over HTTP from the emulators.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from exportd.settings import SmtpConfig, StorageConfig
from exportd.storage.s3 import make_s3_client
from tests.integration.conftest import BACKEND_FACTORIES, Api, make_settings
from tests.integration.storage_servers import (
    SMTP_PASSWORD,
    SMTP_USER,
    MiB,
    Pki,
    s3_config,
)

RECIPIENT = "alice@example.com"
SMALL_BODY = {
    "type": "menuCategoriesByMuscle",
    "fileName": "menus.csv",
    "variables": {"a": "muscle1", "b": "muscle2"},
}


@asynccontextmanager
async def embedded_api(data_dir: Path, sample_db: Path, **overrides: Any) -> AsyncIterator[Api]:
    """A started embedded app with ``overrides`` applied to the test settings."""
    settings = make_settings(data_dir, sample_db, **overrides)
    app = BACKEND_FACTORIES["embedded"](settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield Api(app, client, settings, "embedded")


def fresh_s3_bucket(moto_url: str) -> StorageConfig:
    bucket = f"exports-{uuid.uuid4().hex[:12]}"
    make_s3_client(s3_config(moto_url, bucket)).create_bucket(Bucket=bucket)
    return s3_config(moto_url, bucket)


def gcs_config(url: str, bucket: str, credentials: Path) -> StorageConfig:
    """The emulator, reached anonymously; links signed with a throwaway service-account key."""
    return StorageConfig.model_validate(
        {
            "kind": "gcs",
            "bucket": bucket,
            "prefix": f"t-{uuid.uuid4().hex[:8]}/",
            "endpoint_url": url,
            "credentials_file": credentials,
            "anonymous": True,
            "multipart_threshold_bytes": 5 * MiB,
            "part_size_bytes": 5 * MiB,
            "max_attempts": 2,
            "timeout_seconds": 10,
        }
    )


def smtp_config(port: int, pki: Pki, **overrides: Any) -> SmtpConfig:
    """STARTTLS with login, the server's certificate trusted through the test CA only."""
    values: dict[str, Any] = {
        "host": "localhost",
        "port": port,
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "sender": "exports@example.org",
        "ca_file": pki.ca_file,
        "timeout_seconds": 10,
        "max_attempts": 2,
    }
    return SmtpConfig.model_validate(values | overrides)


async def fetch(url: str) -> httpx.Response:
    """GET a storage URL over the network (moto or the GCS emulator on loopback)."""
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.text[:500])
    return response


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_mail(content: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed
