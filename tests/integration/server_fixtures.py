"""pytest fixtures that start the loopback servers of :mod:`tests.integration.storage_servers`.

Import the ones a test module needs into it, e.g.
``from tests.integration.server_fixtures import moto_fixture  # noqa: F401`` provides ``moto``.
Module-scoped fixtures start once per importing module; ``smtp`` starts afresh for every test,
so each test sees an empty inbox.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exportd.settings import StorageConfig
from tests.integration.storage_servers import (
    Pki,
    ServerProcess,
    SmtpServer,
    fresh_s3_bucket,
    make_pki,
    start_moto,
    start_smtp,
)


@pytest.fixture(scope="module", name="moto")
def moto_fixture() -> Iterator[ServerProcess]:
    """moto (S3) in server mode on loopback."""
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(name="s3_bucket")
def s3_bucket_fixture(moto: ServerProcess) -> StorageConfig:
    """Storage settings for a bucket of this test's own on ``moto`` (import both fixtures)."""
    return fresh_s3_bucket(moto.url)


@pytest.fixture(scope="module", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA with a server certificate for localhost, and a self-signed certificate."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(name="smtp")
def smtp_fixture(pki: Pki) -> Iterator[SmtpServer]:
    """An aiosmtpd server that requires STARTTLS (certificate from the test CA) and a login."""
    server = start_smtp(starttls_context=pki.server_context, require_auth=True)
    yield server
    server.stop()
