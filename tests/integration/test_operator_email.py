"""E-mail exports on the test cluster, no API involved: the Job's exporter sends through a real
SMTP server on loopback (aiosmtpd, STARTTLS with a test CA, login), and the outcome lands on the
ExportRequest as a ``Delivered`` condition next to ``Admitted`` and ``Finished``.

What is tried: an e-mail export against a server that offers STARTTLS, and one against a
plaintext-only server (which must be refused: no fallback). What must hold: the first is
Succeeded, Delivered True (Sent), with exactly one message carrying the file and no URL on the
request; the second is Failed after one attempt with the mail server's reason and Delivered
False, and nothing was sent. The API shows the same condition (its status mapping is checked
on the stored request).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from exportd.contract import exportrequest as er
from tests.integration.delivery_apps import RECIPIENT, SMTP_PASSWORD, parse_mail, smtp_config
from tests.integration.server_fixtures import pki_fixture, smtp_fixture  # noqa: F401
from tests.integration.storage_servers import Pki, SmtpServer, start_smtp
from tests.k8s.cluster import ExportSetup, LocalCluster, local_cluster, write_catalog
from tests.k8s.fixtures import anyio_backend_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
EMAIL_SPEC = {
    "type": "menuCategoriesByMuscle",
    "fileName": "menus.csv",
    "variables": {"a": "muscle1", "b": "muscle2"},
    "returnType": "email",
    "email": RECIPIENT,
}
TERMINAL = ("Succeeded", "Failed", "Cancelled")


@pytest.fixture
def plaintext_server() -> Iterator[SmtpServer]:
    server = start_smtp()
    yield server
    server.stop()


@asynccontextmanager
async def cluster_mailing_to(
    server: SmtpServer, pki: Pki, tmp_path: Path, sample_db: Path
) -> AsyncIterator[LocalCluster]:
    smtp = smtp_config(server.port, pki, max_attempts=1).model_dump(mode="json")
    smtp["password"] = SMTP_PASSWORD  # a secret dumps masked
    setup = ExportSetup(
        data_dir=tmp_path / "data",
        catalog_path=write_catalog(tmp_path / "catalog"),
        sample_db=sample_db,
        extra_env={"EXPORTD_SMTP": json.dumps(smtp)},
    )
    async with local_cluster(tmp_path, sample_db, setup=setup) as cluster:
        yield cluster


def conditions(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    found = body["status"].get("conditions") or []
    return {c["type"]: (c["status"], c["reason"]) for c in found}


async def run_to_the_end(cluster: LocalCluster, name: str) -> dict[str, Any]:
    operator = await cluster.start_operator(job_backoff_limit=0)
    try:
        await cluster.create_request(name, EMAIL_SPEC)
        return await cluster.until_phase(name, *TERMINAL)
    finally:
        await operator.stop()


async def test_an_emailed_export_is_delivered_and_says_so_on_the_request(
    smtp: SmtpServer, pki: Pki, tmp_path: Path, sample_db: Path
) -> None:
    async with cluster_mailing_to(smtp, pki, tmp_path, sample_db) as cluster:
        body = await run_to_the_end(cluster, "exp-mail")

    status = body["status"]
    assert status["phase"] == "Succeeded", (status.get("reason"), status.get("message"))
    assert status["delivered"] is True and "url" not in status
    assert conditions(body) == {
        "Ready": ("True", "Succeeded"),
        "Complete": ("True", "Succeeded"),
        "Admitted": ("True", "JobCreated"),
        "Finished": ("True", "Succeeded"),
        "Delivered": ("True", "Sent"),
    }
    [message] = smtp.inbox.messages
    assert message.recipients == (RECIPIENT,)
    [attachment] = list(parse_mail(message.content).iter_attachments())
    assert attachment.get_filename() == "menus.csv"
    shown = er.export_status_from_body(body)
    assert [(c.type, c.status, c.reason) for c in shown.conditions] == [
        ("Delivered", "True", "Sent")
    ]


async def test_a_mail_server_without_starttls_fails_the_request_delivered_false(
    plaintext_server: SmtpServer, pki: Pki, tmp_path: Path, sample_db: Path
) -> None:
    async with cluster_mailing_to(plaintext_server, pki, tmp_path, sample_db) as cluster:
        body = await run_to_the_end(cluster, "exp-mail")
        attempts = len(cluster.kubelet.attempts)

    status = body["status"]
    assert status["phase"] == "Failed", status
    assert status["reason"] == "SmtpStartTlsUnavailable"
    assert attempts == 1  # not retriable: the Job fails at once (podFailurePolicy)
    assert conditions(body)["Delivered"] == ("False", "SmtpStartTlsUnavailable")
    assert conditions(body)["Finished"] == ("True", "Failed")
    assert plaintext_server.inbox.messages == []
