"""Every ExportRequest a user is shown is applied with kubectl and reaches its expected phase.

The YAML comes from where users copy it: ``deploy/examples/*.yaml``, the ``yaml`` blocks of the
docs (``docs/*.md``, README) and the kind workflow (its ``request`` shell function rendered with
each call's arguments, and its here-documents). kubectl (YAML 1.1, like Helm and Argo CD) sends
them to the test apiserver; the real operator and exporter run them. Every found request must
have an expectation here, and every expectation a request: a new example cannot go untested.

The test apiserver runs no CEL: requests the real apiserver refuses at apply time (``bad``,
``mismatch``, ``yaml11`` in the workflow; their CRD rules are evaluated in
tests/unit/test_exportrequest_crd.py) reach the operator here, which must fail them with the
same meaning (the asynchronous path, for clusters where the rule does not run).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from exportd.contract.catalog import YAML_BOOLEAN_KEY_HINT
from tests.integration.server_fixtures import pki_fixture, smtp_fixture  # noqa: F401
from tests.integration.storage_servers import Pki, SmtpServer
from tests.integration.test_operator_email import cluster_mailing_to
from tests.k8s.cluster import LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture  # noqa: F401
from tests.k8s.kubectl import Kubectl, kube_tools_dir

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "e2e-kind.yml"
KIND = "kind: ExportRequest"
HEREDOC = re.compile(r"<<'?YAML'?[^\n]*\n(.*?)\n\s*YAML\n", re.DOTALL)
REQUEST_CALL = re.compile(r"\brequest (\S+) (\S+) (\S+) '([^']*)'")

# name -> (phase, reason); Running: an endless export, cancelled or deleted afterwards.
EXPECTED: dict[str, tuple[str, str | None]] = {
    # deploy/examples/
    "seed-export": ("Succeeded", None),
    "menus-by-muscle": ("Succeeded", None),
    "menus-by-mail": ("Succeeded", None),
    "all-users-cancelled": ("Cancelled", "Cancelled"),
    # docs/gitops.md
    "gitops-users": ("Succeeded", None),
    "unquoted-y": ("Failed", "InvalidVariables"),
    # .github/workflows/e2e-kind.yml
    "bad": ("Failed", "InvalidSpec"),  # refused by the CRD's fileName pattern on a cluster
    "mismatch": ("Failed", "InvalidSpec"),  # refused by the CRD's format rule on a cluster
    "yaml11": ("Failed", "InvalidVariables"),  # refused by the CRD's YAML 1.1 rule
    "e2e-seed": ("Succeeded", None),
    "e2e-restart": ("Succeeded", None),
    "e2e-q1": ("Succeeded", None),
    "e2e-broken": ("Failed", "QueryError"),
    "e2e-missing": ("Failed", "SourceUnavailable"),
    "e2e-cancel": ("Running", None),
    "e2e-delete": ("Running", None),
    "e2e-late": ("Failed", "DeadlineExceeded"),
    "e2e-invalid": ("Failed", "InvalidVariables"),  # refused by the webhook on a cluster
}
REFUSED_FOR_YAML_11 = ("unquoted-y", "yaml11")


def example_documents() -> list[str]:
    """The example ExportRequests (the ExportSchedule example is applied by
    tests/integration/test_operator_schedules.py)."""
    paths = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
    return [text for text in (path.read_text() for path in paths) if KIND in text]


def docs_documents() -> list[str]:
    pages = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    blocks = [
        block
        for page in pages
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.DOTALL)
    ]
    return [block for block in blocks if KIND in block]


def workflow_documents() -> list[str]:
    """The workflow's requests: each call of its ``request`` function rendered through the
    function's own here-document, plus the here-documents that are whole requests."""
    text = WORKFLOW.read_text()
    docs = [textwrap.dedent(doc) for doc in HEREDOC.findall(text) if KIND in doc]
    [template] = [doc for doc in docs if "$1" in doc]
    rendered = []
    for name, type_, file_name, variables in REQUEST_CALL.findall(text):
        document = template
        for number, value in enumerate((name.replace("$i", "1"), type_, file_name, variables)):
            document = document.replace(f"${number + 1}", value)
        rendered.append(document)
    return [*rendered, *(doc for doc in docs if "$1" not in doc)]


def name_of(document: str) -> str:
    name: str = yaml.safe_load(document)["metadata"]["name"]
    return name


def test_every_request_users_are_shown_has_an_expectation() -> None:
    """Examples, docs and workflow requests are exactly the expected ones (no untested YAML)."""
    found = [name_of(d) for d in example_documents() + docs_documents() + workflow_documents()]
    assert sorted(found) == sorted(EXPECTED)


async def test_every_example_docs_and_workflow_request_reaches_its_phase(
    smtp: SmtpServer, pki: Pki, tmp_path: Path, sample_db: Path
) -> None:
    """Applied with kubectl to the test apiserver, run by the real operator and exporter, each
    request reaches its expected phase and reason; the YAML 1.1 ``y`` ones are refused with the
    hint to quote the key. The endless ones are then cancelled and deleted with kubectl, as
    the workflow does, and end Cancelled and gone."""
    documents = example_documents() + docs_documents() + workflow_documents()
    async with cluster_mailing_to(smtp, pki, tmp_path, sample_db) as cluster:
        kubectl = Kubectl(kube_tools_dir() / "kubectl", tmp_path / "home", cluster.url)
        operator = await cluster.start_operator(max_running_jobs=30, max_running_per_requester=30)
        try:
            for document in documents:
                applied = await kubectl.run("apply", "--validate=false", "-f", "-", stdin=document)
                assert applied.returncode == 0, applied.stderr
            await cluster.until(lambda: all(reached(cluster, name) for name in EXPECTED))
            shown = {name: outcome(cluster, name) for name in EXPECTED}
            messages = {name: (cluster.request(name) or {})["status"] for name in EXPECTED}
            cancel = '{"spec": {"cancel": true}}'
            patched = await kubectl.run("patch", "exr", "e2e-cancel", "--type=merge", "-p", cancel)
            assert patched.returncode == 0, patched.stderr
            deleted = await kubectl.run("delete", "exr", "e2e-delete", "--wait=false")
            assert deleted.returncode == 0, deleted.stderr
            await cluster.until(lambda: cluster.phase("e2e-cancel") == "Cancelled")
            await cluster.until(lambda: cluster.request("e2e-delete") is None)
        finally:
            await operator.stop()
    assert shown == EXPECTED, {n: messages.get(n) for n in EXPECTED if shown[n] != EXPECTED[n]}
    for name in REFUSED_FOR_YAML_11:
        assert YAML_BOOLEAN_KEY_HINT in messages[name]["message"]
        assert "variables.true" in messages[name]["message"]
    assert [m.recipients for m in smtp.inbox.messages] == [("reports@example.com",)]


def reached(cluster: LocalCluster, name: str) -> bool:
    wanted = EXPECTED[name][0]
    phase = cluster.phase(name)
    if wanted == "Running":
        return phase == "Running"
    return phase in ("Succeeded", "Failed", "Cancelled")


def outcome(cluster: LocalCluster, name: str) -> tuple[str, str | None]:
    body = cluster.request(name) or {}
    status = body.get("status") or {}
    return status.get("phase"), status.get("reason")
