"""HTTPS served by ``exportd serve`` itself (``tls_cert_file`` + ``tls_key_file``), for
deployments without a TLS-terminating ingress.

A throwaway CA (trustme) issues a certificate for 127.0.0.1; a real ``exportd serve`` child
process serves with it on loopback, and httpx clients verify against that CA only. Start-up
refuses half a TLS configuration and a key that does not belong to the certificate.
"""

from __future__ import annotations

import csv
import io
import json
import re
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.e2e.conftest import EXPORTD, STARTUP_DEADLINE_SECONDS, Server

pytestmark = pytest.mark.e2e


@dataclass
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path


def issue(directory: Path, name: str) -> Pki:
    """A CA of its own and a server certificate for 127.0.0.1, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    pki = Pki(directory / f"{name}-ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    pki.cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(pki.key_file))
    return pki


def trusting(pki: Pki) -> ssl.SSLContext:
    """A client context that trusts only the test CA (and checks the host name)."""
    return ssl.create_default_context(cafile=str(pki.ca_file))


@dataclass
class TlsServer(Server):
    """The e2e server, reached over HTTPS and waited for with the test CA."""

    pki: Pki | None = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        assert self.pki is not None
        return {
            **super().env(),
            "EXPORTD_TLS_CERT_FILE": str(self.pki.cert_file),
            "EXPORTD_TLS_KEY_FILE": str(self.pki.key_file),
        }

    def client(self, **kwargs: Any) -> httpx.Client:
        assert self.pki is not None
        return httpx.Client(base_url=self.base_url, timeout=120, verify=trusting(self.pki))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        with self.client() as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    pytest.fail(f"exportd serve exited {self.process.returncode}:\n{self.log()}")
                try:
                    if client.get("/readyz", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        pytest.fail(f"exportd serve (TLS) not ready in time:\n{self.log()}")


@pytest.fixture
def tls_server(tmp_path: Path, sample_db: Path) -> Any:
    server = TlsServer(tmp_path / "data", sample_db, pki=issue(tmp_path / "pki", "api"))
    server.start()
    yield server
    server.stop()


def test_serve_answers_https_verified_by_the_issuing_ca_and_links_are_https(
    tls_server: TlsServer,
) -> None:
    """Probe, an authenticated export and its download all go over HTTPS that verifies
    against the CA that issued the configured certificate."""
    with tls_server.client() as client:
        assert client.get("/livez").status_code == 200
        response = client.post(
            "/export",
            json={
                "type": "userExport",
                "returnType": "url",
                "fileName": "tier5.csv",
                "variables": {"x": 5, "y": 5},
            },
            headers=tls_server.headers(),
        )
        assert response.status_code == 200, response.text
        url = response.json()["url"]
        assert url.startswith(f"https://127.0.0.1:{tls_server.port}/")
        download = client.get(url)
        assert download.status_code == 200
        header, *rows = list(csv.reader(io.StringIO(download.text)))
        assert header[:4] == ["id", "name", "email", "tier"]
        assert {row[3] for row in rows} == {"5"}
        assert len(rows) == tier5_users(tls_server.sample_db)


def tier5_users(sample_db: Path) -> int:
    import duckdb

    con = duckdb.connect(str(sample_db), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM users WHERE tier = 5").fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0])


def test_serve_with_tls_refuses_clients_that_do_not_trust_its_ca_and_plain_http(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    """Another CA's trust store fails verification; plain HTTP to the TLS port gets no answer."""
    stranger = issue(tmp_path / "other", "other")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_server.base_url}/livez", verify=trusting(stranger), timeout=10)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/livez", timeout=10)


def dockerfile_healthcheck() -> list[str]:
    """The API image's HEALTHCHECK command (exec form), as the container runtime runs it."""
    text = (Path(__file__).resolve().parents[2] / "api" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    (line,) = [line for line in joined.splitlines() if line.startswith("HEALTHCHECK ")]
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    return command


def test_the_api_image_health_check_passes_against_an_https_api(tls_server: TlsServer) -> None:
    """The image's probe, run with the server's environment, speaks TLS and exits 0."""
    python, *rest = dockerfile_healthcheck()
    assert python == "python"
    env = {key: value for key, value in tls_server.env().items() if key != "EXPORTD_HOST"}
    done = subprocess.run(
        [sys.executable, *rest], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def serve_once(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``exportd serve`` expected to refuse at start-up (a timeout here is a failure)."""
    data_dir = tmp_path / "data"
    return subprocess.run(
        [str(EXPORTD), "serve", "--port", "1"],  # never bound: the refusal comes first
        env={"PATH": "/usr/bin:/bin", "HOME": str(data_dir), "EXPORTD_DATA_DIR": str(data_dir)}
        | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("given", ["EXPORTD_TLS_CERT_FILE", "EXPORTD_TLS_KEY_FILE"])
def test_serve_refuses_a_certificate_without_its_key_and_the_reverse(
    tmp_path: Path, given: str
) -> None:
    pki = issue(tmp_path / "pki", "api")
    path = pki.cert_file if given == "EXPORTD_TLS_CERT_FILE" else pki.key_file
    done = serve_once(tmp_path, **{given: str(path)})
    assert done.returncode == 3, done.stderr
    assert "invalid settings" in done.stderr
    assert "set both tls_cert_file and tls_key_file" in done.stderr
    assert "BEGIN" not in done.stderr  # no file content, no key material


def test_serve_refuses_a_key_that_does_not_belong_to_the_certificate(tmp_path: Path) -> None:
    one, other = issue(tmp_path / "a", "a"), issue(tmp_path / "b", "b")
    done = serve_once(
        tmp_path,
        EXPORTD_TLS_CERT_FILE=str(one.cert_file),
        EXPORTD_TLS_KEY_FILE=str(other.key_file),
    )
    assert done.returncode == 3, done.stderr
    assert "cannot serve HTTPS with" in done.stderr
