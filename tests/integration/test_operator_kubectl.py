"""kubectl against the test cluster: the CRD file is applied and served as on a real cluster, an
ExportRequest applied from YAML runs, and ``kubectl get exportrequests`` shows its columns.

kubectl comes from scripts/fetch-kube-tools.sh (cached under .tools/); it runs with HOME,
KUBECONFIG and its cache in the test's tmp directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import kmock
import pytest
import yaml

from tests.k8s.cluster import CRD_PATH, LocalCluster, new_apiserver
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture  # noqa: F401
from tests.k8s.kubectl import Kubectl, kube_tools_dir

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REQUEST_YAML = """\
apiVersion: exportd.dev/v1alpha1
kind: ExportRequest
metadata:
  name: menus-by-muscle
spec:
  type: menuCategoriesByMuscle
  fileName: menus.csv
  variables: {a: muscle1, b: muscle2}
"""


@pytest.fixture(scope="module")
def kubectl_binary() -> Path:
    return kube_tools_dir() / "kubectl"


def columns(table: str) -> dict[str, str]:
    """The one data row of kubectl's table output, by column header."""
    header, row = table.strip().splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    bounds = [*starts[1:], None]
    return {name: row[s:e].strip() for name, s, e in zip(names, starts, bounds, strict=True)}


async def test_kubectl_reads_the_crd_file_as_a_custom_resource_definition(
    kubectl_binary: Path, tmp_path: Path
) -> None:
    """Client-side: kubectl decodes the file (no server-side schema checks involved) into the
    very object the file describes."""
    api = new_apiserver()
    async with api, kmock.Server(api) as server:
        kubectl = Kubectl(kubectl_binary, tmp_path / "home", str(server.url).rstrip("/"))
        decoded = await kubectl.run(
            "create", "--dry-run=client", "--validate=false", "-o", "json", "-f", str(CRD_PATH)
        )
    assert decoded.returncode == 0, decoded.stderr
    assert json.loads(decoded.stdout) == yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))


async def test_kubectl_get_exportrequests_shows_the_printer_columns(
    cluster: LocalCluster, kubectl_binary: Path, tmp_path: Path
) -> None:
    """A request applied with kubectl is run by the operator; `kubectl get exportrequests`
    shows Type, Format, Phase, Rows, Duration and Age, and `-o wide` the link and its expiry;
    Format is the effective one, also when the YAML leaves it to the file name."""
    kubectl = Kubectl(kubectl_binary, tmp_path / "home", cluster.url)
    operator = await cluster.start_operator()
    applied = await kubectl.run("apply", "--validate=false", "-f", "-", stdin=REQUEST_YAML)
    assert applied.returncode == 0, applied.stderr
    body = await cluster.until_phase("menus-by-muscle", "Succeeded", "Failed")
    await operator.stop()

    listed = await kubectl.run("get", "exportrequests")
    assert listed.returncode == 0, listed.stderr
    shown = columns(listed.stdout)
    rows = str(body["status"]["rows"])
    assert re.fullmatch(r"(\d+m)?\d+s", shown["DURATION"]), shown
    assert shown | {"AGE": "", "DURATION": ""} == {
        "NAME": "menus-by-muscle",
        "TYPE": "menuCategoriesByMuscle",
        "FORMAT": "csv",
        "PHASE": "Succeeded",
        "ROWS": rows,
        "DURATION": "",
        "AGE": "",
    }
    wide = columns((await kubectl.run("get", "exr", "-o", "wide")).stdout)
    assert wide["URL"] == body["status"]["url"]
    assert wide["EXPIRES"] == body["status"]["expiresAt"]
