"""An embedded API on real storage and mail servers, for the delivery and handle-link tests.

The app is the real one (in-process ASGI, embedded backend, exporter child processes); only its
storage and SMTP settings point at the loopback servers of :mod:`tests.integration.storage_servers`
(moto for S3, gcp-storage-emulator for GCS, aiosmtpd with a test CA). Links the API hands out
for those stores are real presigned URLs, fetched over HTTP from the emulators.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import BACKEND_FACTORIES, Api, make_settings

# Defined with the servers they configure; also imported from here by the link and operator
# e-mail tests.
from tests.integration.storage_servers import SMTP_PASSWORD as SMTP_PASSWORD
from tests.integration.storage_servers import fresh_s3_bucket as fresh_s3_bucket
from tests.integration.storage_servers import parse_mail as parse_mail
from tests.integration.storage_servers import smtp_config as smtp_config

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


async def fetch(url: str) -> httpx.Response:
    """GET a storage URL over the network (moto or the GCS emulator on loopback)."""
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.text[:500])
    return response


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
