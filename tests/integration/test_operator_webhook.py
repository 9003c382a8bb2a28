"""Apply-time validation: the operator's validating admission webhook refuses a bad
ExportRequest before it is stored, with the reason and message the request would otherwise
fail with later; a good one is admitted and runs.

The test apiserver calls the webhook as a real apiserver does (tests/k8s/webhook.py): an
AdmissionReview over HTTPS to the operator's kopf webhook server, verified with the test CA.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from exportd.contract.catalog import YAML_BOOLEAN_KEY_HINT
from tests.e2e.conftest import free_port
from tests.k8s.cluster import LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture  # noqa: F401
from tests.k8s.kubectl import Kubectl, kube_tools_dir
from tests.k8s.webhook import validating_webhook

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BAD = """\
apiVersion: exportd.dev/v1alpha1
kind: ExportRequest
metadata: {name: unquoted}
spec: {type: userExport, fileName: users.xlsx, variables: {x: 1, y: 2}}
"""
OUT_OF_RANGE = BAD.replace("unquoted", "out-of-range").replace("y: 2", '"y": 9')
UNKNOWN = BAD.replace("unquoted", "unknown").replace("userExport", "noSuchExport")
GOOD = BAD.replace("unquoted", "good").replace("y: 2", '"y": 2')


async def wait_listening(port: int, ca_file: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise TimeoutError("the webhook server never listened")


async def test_a_bad_request_is_refused_at_apply_time_and_never_stored(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """kubectl apply of an unquoted `y`, an out-of-range variable and an unknown type each
    fail at once, naming the problem (the YAML 1.1 hint included); none is stored. A good
    request is admitted and succeeds."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port = free_port()
    url = f"https://127.0.0.1:{port}/validate-request"
    cluster.api.admission.append(validating_webhook(url, ca_file))
    kubectl = Kubectl(kube_tools_dir() / "kubectl", tmp_path / "home", cluster.url)
    operator = await cluster.start_operator(
        webhook_port=port, webhook_cert_path=cert_file, webhook_key_path=key_file
    )
    try:
        await wait_listening(port, ca_file)
        refused = {}
        for document in (BAD, OUT_OF_RANGE, UNKNOWN):
            result = await kubectl.run("apply", "--validate=false", "-f", "-", stdin=document)
            refused[document] = result
        good = await kubectl.run("apply", "--validate=false", "-f", "-", stdin=GOOD)
        assert good.returncode == 0, good.stderr
        body = await cluster.until_phase("good", "Succeeded", "Failed")
    finally:
        await operator.stop()

    assert body["status"]["phase"] == "Succeeded"
    unquoted, out_of_range, unknown = refused.values()
    assert all(r.returncode != 0 for r in refused.values())
    assert "denied the request: InvalidVariables" in unquoted.stderr
    assert YAML_BOOLEAN_KEY_HINT in unquoted.stderr
    assert "variables.y: Input should be less than or equal to 5" in out_of_range.stderr
    assert "UnknownExportType" in unknown.stderr
    for name in ("unquoted", "out-of-range", "unknown"):
        assert cluster.request(name) is None  # refused before it was stored
