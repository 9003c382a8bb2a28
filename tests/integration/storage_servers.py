"""Real servers on loopback for the storage and mail tests: moto (S3), gcp-storage-emulator
(GCS), aiosmtpd (SMTP, with and without TLS), a test CA, and a recording HTTP proxy.

What each emulator enforces (checked by the tests that use them):

- moto 5 (server mode) checks ``If-None-Match: *`` on PutObject and CompleteMultipartUpload
  and answers 412. It checks, then writes, so two requests handled at once on two threads
  could both pass; the server here therefore runs single-threaded, which makes that check and
  write atomic, as S3 itself guarantees. It reports every multipart upload as initiated on
  2010-11-10, so the age filter of ``abort_stale_uploads`` cannot be exercised against it.
- gcp-storage-emulator ignores ``ifGenerationMatch`` entirely (a second upload overwrites) and
  does not check signatures of signed URLs. The GCS tests therefore show that every upload
  request carries ``ifGenerationMatch=0`` (through :class:`RecordingProxy`) and how a 412 from
  the store is handled; they do not claim the emulator enforces create-only.

Every server listens on a port the OS picked; nothing leaves 127.0.0.1. A missing package makes
the fixtures fail loudly (ImportError), never skip.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import http.client
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from exportd.settings import SmtpConfig, StorageConfig
from exportd.storage.s3 import make_s3_client

S3_REGION = "us-east-1"
S3_KEY_ID = "testing-key-id"
S3_SECRET = "testing-secret-key"
SMTP_USER = "exportd"
SMTP_PASSWORD = "smtp-test-password"
MiB = 1024 * 1024

# moto needs no credentials of its own, but boto3 does; these are fake and loopback-only.
_MOTO_SCRIPT = """
import sys
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)
app = DomainDispatcherApplication(create_backend_app)
server = make_server("127.0.0.1", 0, app, threaded=False, request_handler=MotoRequestHandler)
print(server.port, flush=True)
server.serve_forever()
"""


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_moto() -> ServerProcess:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    process = subprocess.Popen(
        [sys.executable, "-c", _MOTO_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.isdigit():
        process.kill()
        raise RuntimeError(f"moto server did not start (said {line!r})")
    server = ServerProcess(process, f"http://127.0.0.1:{line}")
    _wait_http(server.url + "/")
    return server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gcs_emulator(bucket: str) -> ServerProcess:
    """The emulator's CLI cannot bind port 0; a freshly freed port is taken, retried on a clash."""
    executable = Path(sys.executable).with_name("gcp-storage-emulator")
    for _ in range(3):
        port = free_port()
        process = subprocess.Popen(
            [
                str(executable),
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "-M",
                "-q",
                "--default-bucket",
                bucket,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        server = ServerProcess(process, f"http://127.0.0.1:{port}")
        try:
            _wait_http(server.url + "/", process=process)
        except RuntimeError:
            server.stop()
            continue
        return server
    raise RuntimeError("gcp-storage-emulator did not start")


def _wait_http(url: str, *, process: subprocess.Popen[str] | None = None) -> None:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection(host, int(port), timeout=2)
            connection.request("GET", "/")
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not answer")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # with the query string


@dataclass
class RecordingProxy:
    """A loopback HTTP proxy in front of an emulator: records every request line and, when
    ``refuse`` says so, answers 412 Precondition Failed the way GCS does instead of forwarding.
    It keeps the Host header, so upload session URLs the emulator returns point back here."""

    upstream: str
    refuse: Callable[[RecordedRequest], bool] | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> RecordingProxy:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _proxy_handler(proxy: RecordingProxy) -> type[BaseHTTPRequestHandler]:
    upstream_host, upstream_port = proxy.upstream.split("//", 1)[1].split(":")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = RecordedRequest(self.command, self.path)
            proxy.requests.append(request)
            if proxy.refuse is not None and proxy.refuse(request):
                self._answer(412, [("Content-Type", "application/json")], _PRECONDITION_BODY)
                return
            connection = http.client.HTTPConnection(upstream_host, int(upstream_port), timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            payload = answer.read()
            skipped = {"content-length", "transfer-encoding", "connection"}
            kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in skipped]
            connection.close()
            self._answer(answer.status, kept, payload)

        def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _relay

    return Handler


_PRECONDITION_BODY = (
    b'{"error": {"code": 412, "message": "At least one of the pre-conditions you specified did'
    b' not hold.", "errors": [{"reason": "conditionNotMet"}]}}'
)


# --- TLS ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A test CA (trusted through ``ca_file``) with a server certificate it issued for
    localhost/127.0.0.1, and a self-signed certificate for the same names (``self_signed_file``
    trusts it when given as ``ca_file``)."""

    ca_file: Path
    server_context: ssl.SSLContext
    self_signed_file: Path
    self_signed_context: ssl.SSLContext


def make_pki(directory: Path) -> Pki:
    ca = trustme.CA()
    ca_file = directory / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    cert_file, key_file = _self_signed(directory)
    self_signed_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    self_signed_context.load_cert_chain(cert_file, key_file)
    return Pki(ca_file, server_context, cert_file, self_signed_context)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "self-signed.pem", directory / "self-signed.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


# --- SMTP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    sender: str
    recipients: tuple[str, ...]
    content: bytes


class Inbox:
    """aiosmtpd handler that keeps every accepted message."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        mail = ReceivedMail(envelope.mail_from or "", tuple(envelope.rcpt_tos), content)
        with self._lock:
            self.messages.append(mail)
        return "250 OK"


class DroppingInbox(Inbox):
    """Keeps the message, then drops the connection before its 250 reply reaches the client:
    the sender cannot know the message was accepted."""

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        await super().handle_DATA(server, session, envelope)
        assert server.transport is not None
        server.transport.abort()
        return "250 OK"


def _authenticate(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == SMTP_USER
        and auth_data.password.decode() == SMTP_PASSWORD
    )
    return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    controller: Controller
    inbox: Inbox
    port: int

    def stop(self) -> None:
        self.controller.stop()


def start_smtp(
    *,
    starttls_context: ssl.SSLContext | None = None,
    implicit_context: ssl.SSLContext | None = None,
    require_auth: bool = False,
    inbox: Inbox | None = None,
) -> SmtpServer:
    """``starttls_context``: offers STARTTLS and refuses mail before it; ``implicit_context``:
    TLS from the first byte; neither: a plaintext-only server that does not offer STARTTLS."""
    inbox = inbox or Inbox()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if starttls_context is not None:
        kwargs |= {"tls_context": starttls_context, "require_starttls": True}
    if require_auth:
        kwargs |= {"authenticator": _authenticate, "auth_required": True}
        # aiosmtpd offers AUTH only after STARTTLS unless told the connection is TLS already.
        kwargs["auth_require_tls"] = implicit_context is None
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        ssl_context=implicit_context,
        server_hostname="localhost",
        ready_timeout=10,
        **kwargs,
    )
    controller.start()
    return SmtpServer(controller, inbox, port)


def smtp_config(port: int, pki: Pki | None = None, **overrides: Any) -> SmtpConfig:
    """Settings for a server from :func:`start_smtp` on ``port``: STARTTLS with the test login,
    short timeouts, two attempts; the server's certificate trusted through the test CA only when
    ``pki`` is given (otherwise through the system store, or ``ca_file`` among ``overrides``)."""
    values: dict[str, Any] = {
        "host": "localhost",
        "port": port,
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "sender": "exports@example.org",
        "timeout_seconds": 10,
        "max_attempts": 2,
    }
    if pki is not None:
        values["ca_file"] = pki.ca_file
    return SmtpConfig.model_validate(values | overrides)


def parse_mail(content: bytes) -> EmailMessage:
    """A received message's bytes as an :class:`EmailMessage` (modern policy)."""
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def link_in_mail(content: bytes) -> str:
    """The one http link in a received message that must carry no attachment (the export was
    too large to attach)."""
    message = parse_mail(content)
    assert list(message.iter_attachments()) == []
    body = message.get_body(("plain",))
    assert body is not None
    urls: list[str] = re.findall(r"http://\S+", body.get_content())
    [url] = urls
    return url


def wait_for(
    condition: Callable[[], bool], *, timeout: float = 60, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def write_service_account(path: Path) -> Path:
    """A service-account key file with a fresh RSA key: it signs V4 links locally. Its token
    URI is never used, because the emulator is reached with anonymous requests."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "exportd-test",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "exportd@exportd-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(info), encoding="utf-8")
    return path


# --- child processes ------------------------------------------------------------------------

# A second process publishing through storage_from_settings, configured only by EXPORTD_*
# variables, as an exporter is. Waits for ``go`` to exist (if given) so two can start together.
_PUBLISH_SCRIPT = """
import json, sys, time
from pathlib import Path
from exportd.settings import ExporterSettings
from exportd.storage import storage_from_settings
path, key, sha256, go = sys.argv[1:5]
storage = storage_from_settings(ExporterSettings())
while go and not Path(go).exists():
    time.sleep(0.005)
stored = storage.publish(Path(path), key, content_type="text/csv", download_name="race.csv",
                         sha256=sha256)
print(json.dumps({"created": stored.created, "sha256": stored.sha256}), flush=True)
"""


def child_env(settings_env: dict[str, str]) -> dict[str, str]:
    """The test process's environment without its EXPORTD_* variables, plus ``settings_env``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
    return kept | settings_env


def start_publisher(
    settings_env: dict[str, str], path: Path, key: str, sha256: str, go: Path | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _PUBLISH_SCRIPT, str(path), key, sha256, str(go or "")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(settings_env),
        cwd=Path(__file__).parents[2],
    )


def release_together(children: Sequence[subprocess.Popen[str]], go: Path) -> list[str]:
    """Lets ``children`` (started with ``go``, waiting for it) proceed at once and returns
    their output, as :func:`finish_children` does."""
    time.sleep(0.1)  # all started (not a timing assertion: a late child only loses earlier)
    go.touch()
    return finish_children(children, timeout=120)


def finish_children(children: Sequence[subprocess.Popen[str]], *, timeout: float) -> list[str]:
    """Waits for every child; each must exit 0 (its stderr is the message if not). Returns
    their standard outputs in order."""
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=timeout)
        assert child.returncode == 0, err
        outputs.append(out)
    return outputs


def s3_config(url: str, bucket: str, **overrides: Any) -> StorageConfig:
    """moto-ready S3 settings with small parts (5 MiB, the S3 minimum) to keep tests quick."""
    values: dict[str, Any] = {
        "kind": "s3",
        "bucket": bucket,
        "endpoint_url": url,
        "region": S3_REGION,
        "access_key_id": S3_KEY_ID,
        "secret_access_key": S3_SECRET,
        "addressing_style": "path",
        "multipart_threshold_bytes": 5 * MiB,
        "part_size_bytes": 5 * MiB,
        "max_attempts": 2,
        "timeout_seconds": 30,
    }
    return StorageConfig.model_validate(values | overrides)


def fresh_s3_bucket(moto_url: str) -> StorageConfig:
    """:func:`s3_config` for a bucket of its own, created on the moto server at ``moto_url``."""
    bucket = f"exports-{uuid.uuid4().hex[:12]}"
    make_s3_client(s3_config(moto_url, bucket)).create_bucket(Bucket=bucket)
    return s3_config(moto_url, bucket)


def gcs_config(url: str, bucket: str, credentials: Path, **overrides: Any) -> StorageConfig:
    """The GCS emulator at ``url``, reached anonymously, under a fresh prefix (one emulator, a
    namespace per test); links signed with the service-account key in ``credentials``."""
    values: dict[str, Any] = {
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
    return StorageConfig.model_validate(values | overrides)


def storage_env(config: StorageConfig, tmp_path: Path) -> dict[str, str]:
    """``config`` as EXPORTD_STORAGE__* variables; an S3 secret key goes through a _FILE."""
    env = _settings_env("STORAGE", config, "secret_access_key", tmp_path / "s3-secret")
    return env | {"EXPORTD_DATA_DIR": str(tmp_path / "child-data")}


def _settings_env(
    section: str, config: StorageConfig | SmtpConfig, secret: str, secret_file: Path
) -> dict[str, str]:
    """``config`` as EXPORTD_<section>__* variables, except its ``secret`` field: that one is
    written to ``secret_file`` and named by EXPORTD_<section>__<SECRET>_FILE, as in a cluster."""
    prefix = f"EXPORTD_{section}__"
    env = {
        f"{prefix}{name.upper()}": str(value)
        for name, value in config.model_dump(exclude_none=True).items()
        if name != secret
    }
    value = getattr(config, secret)
    if value is not None:
        secret_file.write_text(value.get_secret_value() + "\n", encoding="utf-8")
        env[f"{prefix}{secret.upper()}_FILE"] = str(secret_file)
    return env


def write_random(path: Path, size: int) -> str:
    """A file of ``size`` bytes no two MiB of which are equal; returns its SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with path.open("wb") as handle:
        for offset in range(0, size, MiB):
            chunk = block[: min(MiB, size - offset)]
            if len(chunk) >= 8:
                chunk = offset.to_bytes(8, "big") + chunk[8:]
            handle.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


_DELIVER_SCRIPT = """
import json, sys, time
from pathlib import Path
from exportd.delivery.by_email import deliver
from exportd.contract.errors import ExportdError
from exportd.settings import ExporterSettings
from exportd.contract.spec import ExportSpec
from exportd.storage import StoredObject, storage_from_settings
spec = ExportSpec.model_validate_json(sys.argv[1])
stored = StoredObject(**json.loads(sys.argv[2]))
go = sys.argv[3]
settings = ExporterSettings()
storage = storage_from_settings(settings)
while go and not Path(go).exists():
    time.sleep(0.005)
try:
    print(deliver(spec, stored, storage, settings).model_dump_json(), flush=True)
except ExportdError as exc:
    print(json.dumps({"error": exc.reason}), flush=True)
"""


def smtp_env(config: SmtpConfig, tmp_path: Path) -> dict[str, str]:
    """``config`` as EXPORTD_SMTP__* variables, the password through EXPORTD_SMTP__PASSWORD_FILE."""
    return _settings_env("SMTP", config, "password", tmp_path / "smtp-password")


def start_deliverer(
    settings_env: dict[str, str], spec_json: str, stored_json: str, go: Path
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _DELIVER_SCRIPT, spec_json, stored_json, str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(settings_env),
        cwd=Path(__file__).parents[2],
    )
