"""Settings: one class per process, read from ``EXPORTD_*`` environment variables.

Every secret may also come from a file: ``EXPORTD_JWT_SECRET_FILE=/run/secrets/jwt`` sets
``jwt_secret`` from that file's content (trailing newline removed), which is how Kubernetes
Secrets, Docker secrets and Vault injectors hand them over. Nested fields use ``__``:
``EXPORTD_STORAGE__KIND=local``. This module is the only place that reads the environment.
"""

from __future__ import annotations

import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from exportd.contract.addresses import EmailAddress
from exportd.contract.podsettings import ExporterPodConfig

ENV_PREFIX = "EXPORTD_"
MAX_LINK_EXPIRY_SECONDS = 7 * 24 * 3600
# A rate limit as the `limits` library writes it: "10/minute", "100/5 minutes".
RefundPhase = Literal["Failed", "Cancelled"]
_RATE = r"^\s*\d+\s*(/|per)\s*(\d+\s+)?(second|minute|hour|day)s?\s*$"


class SourceConfig(BaseModel):
    """One database exports read from; the catalog refers to it by name."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["duckdb", "postgres", "mysql"] = "duckdb"
    path: Path | None = None
    dsn: SecretStr | None = None
    password: SecretStr | None = None
    password_file: Path | None = None

    def resolved_password(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").rstrip("\n")
        return self.password.get_secret_value() if self.password else None


class StorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "s3", "gcs"] = "local"
    root: Path | None = None
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = Field(
        None,
        description="S3 access key id. Unset: the SDK's standard chain (env, profile, IAM role).",
    )
    secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    secret_access_key_file: Path | None = Field(
        None, description="File holding the S3 secret access key; wins over the inline value."
    )
    addressing_style: Literal["auto", "virtual", "path"] = Field(
        "auto", description="S3 bucket addressing; `path` for most S3-compatible stores."
    )
    credentials_file: Path | None = Field(
        None,
        description="GCS service-account JSON (also signs links). Unset: Application Default "
        "Credentials, signing through the IAM signBlob API.",
    )
    project: str | None = Field(None, description="GCS project id (Unset: from credentials).")
    anonymous: bool = Field(
        False,
        description="GCS: send unauthenticated requests (emulators only); links are still "
        "signed with `credentials_file`.",
    )
    multipart_threshold_bytes: int = Field(
        64 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="Files at least this large go up as S3 multipart / GCS resumable uploads.",
    )
    part_size_bytes: int = Field(
        16 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        le=5 * 1024 * 1024 * 1024,
        description="Size of one multipart part / resumable chunk (S3 minimum 5 MiB).",
    )
    max_attempts: int = Field(
        5, ge=1, le=20, description="Attempts per storage request before it fails (backoff)."
    )
    timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="Connect and read timeout of one storage request."
    )

    @model_validator(mode="after")
    def _bucket_for_cloud(self) -> StorageConfig:
        if self.kind != "local" and not self.bucket:
            raise ValueError(f"storage kind {self.kind} needs a bucket")
        return self

    def resolved_secret_access_key(self) -> str | None:
        if self.secret_access_key_file is not None:
            return self.secret_access_key_file.read_text(encoding="utf-8").rstrip("\n")
        return self.secret_access_key.get_secret_value() if self.secret_access_key else None


class SmtpConfig(BaseModel):
    """Outgoing mail for ``returnType: email``; TLS is mandatory (STARTTLS or implicit)."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(None, description="SMTP server. Unset: e-mail delivery is off.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port (587 STARTTLS, 465 TLS).")
    mode: Literal["starttls", "tls"] = Field(
        "starttls",
        description="`starttls`: upgrade after EHLO, refused if the server does not offer it "
        "(no plaintext fallback); `tls`: implicit TLS from the first byte.",
    )
    username: str | None = Field(None, description="SMTP login (sent only after TLS).")
    password: SecretStr | None = Field(None, description="SMTP password.")
    password_file: Path | None = Field(
        None, description="File holding the SMTP password; wins over the inline value."
    )
    sender: EmailAddress | None = Field(None, description="From address of export e-mails.")
    ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for the SMTP server. Unset: system CAs."
    )
    timeout_seconds: float = Field(30.0, gt=0, le=300, description="SMTP socket timeout.")
    max_attempts: int = Field(
        4, ge=1, le=10, description="Attempts on transient SMTP errors (exponential backoff)."
    )
    attachment_limit_bytes: int = Field(
        10 * 1024 * 1024,
        ge=0,
        description="Largest whole message (base64 included) sent with the file attached; "
        "larger exports are e-mailed as a link.",
    )
    outbox: bool | None = Field(
        None,
        description="Development only, when `host` is unset: keep e-mails as files under "
        "DATA_DIR/outbox (listed on the web page) instead of sending them. Unset: on in embedded "
        "mode, off otherwise; any `host` turns it off.",
    )

    def resolved_password(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").rstrip("\n")
        return self.password.get_secret_value() if self.password else None


class FileSecretsSource(PydanticBaseSettingsSource):
    """``EXPORTD_<FIELD>_FILE`` -> the field's value, read from that file.

    Only for fields that exist and have no ``<field>_file`` field of their own (such as
    ``password_file`` or ``ca_file``, which take a path and are read by the ordinary env source).
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, path in os.environ.items():
            if not (key.startswith(ENV_PREFIX) and key.endswith("_FILE")):
                continue
            parts = key[len(ENV_PREFIX) : -len("_FILE")].lower().split("__")
            if not _is_secret_path(self.settings_cls, parts):
                continue
            content = Path(path).read_text(encoding="utf-8").rstrip("\n")
            *parents, leaf = parts
            target = values
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = content
        return values


def _inner_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds, and whether it sits behind a dict key (``sources.<name>``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and len(args) == 2:
        return _inner_model(args[1])[0], True
    for arg in args:  # Optional[Model] and other unions
        model, _ = _inner_model(arg)
        if model is not None:
            return model, False
    return None, False


def _is_secret_path(model: type[BaseModel], parts: list[str]) -> bool:
    node: type[BaseModel] | None = model
    index = 0
    while node is not None and index < len(parts) - 1:
        field = node.model_fields.get(parts[index])
        if field is None:
            return False
        node, keyed = _inner_model(field.annotation)
        index += 2 if keyed else 1
    if node is None or index != len(parts) - 1:
        return False
    leaf = parts[-1]
    return leaf in node.model_fields and f"{leaf}_file" not in node.model_fields


class CommonSettings(BaseSettings):
    """Fields every exportd process shares: where data, catalog, sources and storage are."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path("var")
    catalog_path: Path | None = None
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    signing_key: SecretStr | None = None
    public_url: str = "http://127.0.0.1:8000"
    link_expiry_seconds: int = Field(24 * 3600, ge=60)
    link_mode: Literal["direct", "handle"] = Field(
        "direct",
        description="`direct`: links are signed storage URLs; `handle`: links are "
        "`/v1/exports/{id}/download` on the API, which checks the caller, records the download, "
        "can be revoked (410) and redirects to a short-lived storage URL.",
    )
    log_level: str = "INFO"
    # -- operations: logs and housekeeping (issue 8) --
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="Log lines: `json` (one object per line), `console` (readable), or `auto` "
        "(console on a terminal, else JSON).",
    )
    housekeeping_interval_seconds: float = Field(
        3600.0,
        gt=0,
        description="Period of housekeeping (expired files and records, stuck exports); 0 "
        "is not allowed, use a large value to make it rare.",
    )
    schedule_tick_seconds: float = Field(
        10.0,
        gt=0,
        le=60,
        description="How often schedules are checked for due slots (the operator's timer, the "
        "embedded server's scheduler); a slot runs at most this late.",
    )
    file_retention_seconds: int = Field(
        7 * 24 * 3600,
        ge=60,
        description="How long a finished export's file is kept; after it, housekeeping deletes "
        "the file and no new link is issued.",
    )
    record_retention_seconds: int = Field(
        30 * 24 * 3600,
        ge=60,
        description="How long finished export records (and ExportRequests) are kept.",
    )
    stuck_after_seconds: int = Field(
        900,
        ge=60,
        description="A Running export with no live exporter and no status change for this "
        "long is failed by housekeeping (reason `Stuck`).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, FileSecretsSource(settings_cls))

    @field_validator("link_expiry_seconds")
    @classmethod
    def _cap_expiry(cls, value: int) -> int:
        if value > MAX_LINK_EXPIRY_SECONDS:
            raise ValueError(f"link expiry above 7 days ({MAX_LINK_EXPIRY_SECONDS} s) is refused")
        return value

    @model_validator(mode="after")
    def _defaults_under_data_dir(self) -> CommonSettings:
        self.data_dir = self.data_dir.absolute()
        if "sample" not in self.sources:
            self.sources["sample"] = SourceConfig(kind="duckdb", path=self.sample_db_path)
        if self.storage.kind == "local" and self.storage.root is None:
            self.storage.root = self.data_dir / "files"
        return self

    @property
    def sample_db_path(self) -> Path:
        return self.data_dir / "sample.duckdb"

    @property
    def resolved_catalog_path(self) -> Path:
        if self.catalog_path is not None:
            return self.catalog_path
        return Path(__file__).parent / "data" / "catalog.yaml"

    def secret(self, name: str) -> str:
        """A secret from settings, or a development one kept under ``data_dir/secrets``."""
        configured: SecretStr | None = getattr(self, name)
        if configured is not None:
            return configured.get_secret_value()
        return _dev_secret(self.dev_secret_path(name))

    def dev_secret_path(self, name: str) -> Path:
        """Where the development secret ``name`` is kept when settings name none."""
        return self.data_dir / "secrets" / name


def _dev_secret(path: Path) -> str:
    """Created once with mode 0600, so ``exportd token`` and ``exportd serve`` agree."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text(encoding="utf-8").strip()


class Backend(StrEnum):
    EMBEDDED = "embedded"
    KUBERNETES = "kubernetes"


class ApiSettings(CommonSettings):
    """Settings of the API process (``exportd serve``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    backend: Backend = Backend.EMBEDDED
    jwt_secret: SecretStr | None = None
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = Field(30, ge=0, le=300)
    state_db_url: str | None = None
    max_running_exports: int = Field(2, ge=1, le=64)
    max_attempts: int = Field(3, ge=1, le=10)
    retry_backoff_seconds: float = Field(2.0, ge=0, le=600)
    cancel_grace_seconds: float = Field(10.0, gt=0, le=600)
    sync_wait_seconds: float = Field(60.0, ge=0, le=600)
    download_redirect_seconds: int = Field(
        60,
        ge=10,
        le=3600,
        description="Lifetime of the storage URL a handle link redirects to (`link_mode: handle`).",
    )
    exporter_command: list[str] = Field(default_factory=list)
    kubernetes_namespace: str = "default"
    events_heartbeat_seconds: float = Field(
        15.0,
        gt=0,
        le=300,
        description="Quiet time after which an export's event stream sends a heartbeat comment "
        "(keeps proxies from closing it, and finds clients that left).",
    )
    readiness_interval_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Period of the self-check behind /readyz (probes read its cached result).",
    )
    readiness_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="Time one dependency may take to answer the self-check."
    )
    shutdown_drain_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="On SIGTERM, how long /readyz answers 503 while requests are still served, "
        "before the listener closes (lets load balancers stop sending new requests first).",
    )
    # -- protection: tokens, rate limits, throttling, credits, idempotency, input (issue 7) --
    jwt_public_key: str | None = Field(
        None,
        description="PEM public key verifying RS256/ES256 tokens (or `_FILE`); set at most one "
        "of it and `jwt_jwks_url`.",
    )
    jwt_jwks_url: str | None = Field(
        None,
        description="JWKS URL of the identity provider: keys chosen by the token's `kid`, "
        "cached, fetched again at most once a minute on an unknown `kid`.",
    )
    jwt_admin_scope: str = Field(
        "exports:admin", description="Token scope that may read and cancel every user's exports."
    )
    redis_url: SecretStr | None = Field(
        None,
        description="Redis holding rate-limit counters shared by all API replicas (e.g. "
        "`redis://127.0.0.1:6379/0`). Unset: counters in this process's memory.",
    )
    redis_key_prefix: str = Field("exportd", description="Prefix of every rate-limit key in Redis.")
    rate_limits_enabled: bool = Field(True, description="Answer 429 beyond the limits below.")
    rate_limit_create_per_user: str = Field(
        "30/minute",
        pattern=_RATE,
        description="Export creations per user (`N/second`, `N/minute`, `N/hour`, `N/day` or "
        "`N/M minutes`).",
    )
    rate_limit_create_per_ip: str = Field(
        "120/minute", pattern=_RATE, description="Export creations per client IP address."
    )
    rate_limit_read_per_user: str = Field(
        "1200/minute", pattern=_RATE, description="Other authenticated requests per user."
    )
    rate_limit_read_per_ip: str = Field(
        "3000/minute", pattern=_RATE, description="Other authenticated requests per client IP."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR ranges of reverse proxies whose `X-Forwarded-For` is "
        "believed when finding the client IP. Empty: the peer address is the client.",
    )
    max_running_per_user: int = Field(
        2, ge=1, le=64, description="Exports of one user running at once; the rest queue."
    )
    max_queued_exports: int = Field(
        100, ge=0, description="Exports waiting in all; beyond it creating one answers 503."
    )
    max_queued_per_user: int = Field(
        10, ge=0, description="Exports of one user waiting; beyond it creating one answers 503."
    )
    queue_full_retry_after_seconds: int = Field(
        30, ge=1, le=3600, description="`Retry-After` of the 503 answered when the queue is full."
    )
    credits_enabled: bool = Field(True, description="Charge one credit per accepted export.")
    credits_initial: int = Field(5, ge=0, description="Credits of a user never seen before.")
    credits_cap: int = Field(
        5, ge=0, description="The daily credit is added only while the balance is below this."
    )
    credits_per_day: int = Field(1, ge=0, description="Credits added at each local midnight.")
    credits_timezone: str = Field(
        "UTC", description="IANA time zone whose midnight adds the daily credit."
    )
    credits_refund_on: list[RefundPhase] = Field(
        default_factory=lambda: list(get_args(RefundPhase)),
        description="Final phases that give the export's credit back.",
    )
    idempotency_ttl_seconds: int = Field(
        24 * 3600, ge=60, description="How long an `Idempotency-Key` and its response are kept."
    )
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request body; larger ones are answered 413."
    )
    # -- who may receive e-mailed exports (issue 18) --
    email_recipients: Literal["any", "domains", "token"] = Field(
        "any",
        description="Who `returnType: email` may send to: `any` address; `domains`: addresses "
        "in `email_allowed_domains` only; `token`: only the caller token's `email` claim. "
        "Others are refused 403 `RecipientNotAllowed`. The embedded default `any` suits the "
        "development outbox; set `domains` or `token` before configuring a real SMTP server "
        "(the Helm chart defaults to `domains`).",
    )
    email_allowed_domains: list[str] = Field(
        default_factory=list,
        description="Domains whose addresses may receive exports (`email_recipients: domains`); "
        "`example.com` allows `a@example.com`, not `a@sub.example.com`.",
    )
    email_daily_cap_per_user: int = Field(
        20,
        ge=0,
        description="E-mail exports one user may request per day (a moving 24 h window, counted "
        "where rate limits are: Redis or memory); beyond it 429 `EmailCapReached`. 0: e-mail "
        "delivery off (403 `EmailDisabled`).",
    )
    # -- HTTPS served by the API itself, for deployments without a TLS-terminating proxy --
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) the API serves HTTPS with; set together with "
        "`tls_key_file`. Unset: plain HTTP (TLS terminated by an ingress or proxy).",
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of `tls_cert_file`; set together with it."
    )

    @field_validator("credits_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _one_token_key(self) -> ApiSettings:
        if self.jwt_public_key is not None and self.jwt_jwks_url is not None:
            raise ValueError("set at most one of jwt_public_key and jwt_jwks_url")
        return self

    @model_validator(mode="after")
    def _embedded_outbox(self) -> ApiSettings:
        """The development outbox (:mod:`exportd.delivery.outbox`) by default in embedded mode
        only."""
        if self.smtp.outbox is None:
            self.smtp.outbox = self.backend is Backend.EMBEDDED and self.smtp.host is None
        return self

    @field_validator("email_allowed_domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [domain.strip().lower().lstrip("@") for domain in value if domain.strip()]

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        return self

    @property
    def state_db_path(self) -> Path:
        return self.data_dir / "state.sqlite3"


class ExporterSettings(CommonSettings):
    """Settings of one exporter process (``python -m exportd.exporter``)."""

    batch_rows: int = Field(10_000, ge=1, le=1_000_000)
    progress_interval_seconds: float = Field(0.5, ge=0.05)
    temp_dir: Path | None = None
    spec_json: str | None = None  # the export spec, when neither a file nor stdin carries it
    reporter: Literal["stdout", "kubernetes"] = Field(
        "stdout",
        description="Where progress and the result go: JSON lines on stdout, or also the "
        "status of the export's ExportRequest (set by the operator in its Jobs).",
    )
    kube_api_url: str = Field(
        "https://kubernetes.default.svc",
        description="Kubernetes API the `kubernetes` reporter patches ExportRequest status on.",
    )
    kube_namespace: str = Field(
        "default", description="Namespace of the export's ExportRequest (`kubernetes` reporter)."
    )
    kube_token_path: Path = Field(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="Service account token file, read again for every request (tokens rotate); "
        "no Authorization header when it does not exist.",
    )
    kube_ca_path: Path = Field(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        description="CA bundle that verifies the Kubernetes API (https only).",
    )
    report_key: SecretStr | None = Field(
        None,
        description="Key the `kubernetes` reporter signs the result with (set by the operator "
        "per Job: the operator trusts a result only with its request's own key).",
    )


class OperatorSettings(CommonSettings):
    """Settings of the kopf operator."""

    namespace: str | None = None
    report_secret: SecretStr | None = Field(
        None,
        description="Secret (operator only) each export Job's report key is derived from: a "
        "pod can then report a result only for its own ExportRequest. Unset: derived from "
        "`signing_key`, which export pods that hold it could use to forge reports.",
    )

    def resolved_report_secret(self) -> str | None:
        secret = self.report_secret or self.signing_key
        return None if secret is None else secret.get_secret_value()

    exporter_image: str = "ghcr.io/exportd/exporter:0.1.0"
    max_running_jobs: int = Field(4, ge=1)
    max_running_per_requester: int = Field(2, ge=1)
    # The Job each export runs as (see exportd.operator.jobs).
    exporter_command: list[str] = Field(
        default_factory=lambda: ["python", "-m", "exportd.exporter"],
        description="Command of the exporter container; the spec follows as --spec-json.",
    )
    exporter_service_account: str = Field(
        "exportd-exporter",
        description="Service account of export pods: may only get and patch "
        "exportrequests/status (the exporter reports progress and its result there).",
    )
    exporter_env_secret: str | None = Field(
        None, description="Secret whose keys become the exporter's environment (envFrom)."
    )
    exporter_env_config_map: str | None = Field(
        None, description="ConfigMap whose keys become the exporter's environment (envFrom)."
    )
    exporter_catalog_config_map: str | None = Field(
        None,
        description="ConfigMap whose key `catalog.yaml` is mounted read-only at "
        "/etc/exportd/catalog in export pods (their EXPORTD_CATALOG_PATH points at it). Unset: "
        "the catalog shipped in the exporter image.",
    )
    exporter_secret_files: str | None = Field(
        None,
        description="Secret mounted read-only at /etc/exportd/secrets in export pods, one file "
        "per key, for `EXPORTD_*_FILE` settings (works with External Secrets, Vault operators).",
    )
    exporter_data_claim: str | None = Field(
        None,
        description="PersistentVolumeClaim mounted at the exporter's data_dir (local storage "
        "shared with the API); none for object storage.",
    )
    exporter_run_as_user: int = Field(10001, ge=1, description="UID of export pods (non-root).")
    exporter_cpu_request: str = Field("250m", description="CPU request of an export pod.")
    exporter_memory_request: str = Field("256Mi", description="Memory request of an export pod.")
    exporter_cpu_limit: str = Field("1", description="CPU limit of an export pod.")
    exporter_memory_limit: str = Field("1Gi", description="Memory limit of an export pod.")
    exporter_tmp_size: str = Field(
        "10Gi", description="Size limit of the emptyDir at /tmp where the file is built."
    )
    exporter_pod: ExporterPodConfig = Field(
        default_factory=ExporterPodConfig,
        description="Export pods' annotations, extra labels and scheduling (JSON, as in a pod "
        "spec): `annotations`, `labels`, `nodeSelector`, `tolerations`, `affinity`, "
        "`priorityClassName`, `imagePullSecrets` (names).",
    )
    job_backoff_limit: int = Field(
        2, ge=0, le=10, description="Retries of a transiently failed export (Job backoffLimit)."
    )
    job_ttl_seconds: int = Field(
        3600, ge=0, description="How long a finished Job stays (ttlSecondsAfterFinished)."
    )
    resync_seconds: float = Field(
        30.0, gt=0, le=3600, description="Period of the full reconcile that backs up events."
    )
    liveness_port: int = Field(
        8080, ge=1, le=65535, description="Port of the operator's /healthz liveness endpoint."
    )
    webhook_port: int = Field(
        9443, ge=1, le=65535, description="Port of the validating admission webhook (HTTPS)."
    )
    webhook_cert_path: Path | None = Field(
        None,
        description="TLS certificate of the validating admission webhook, which refuses an "
        "ExportRequest whose type or variables the catalog rejects before it is stored. "
        "Unset: no webhook (requests are still checked, and failed, by the operator).",
    )
    webhook_key_path: Path | None = Field(None, description="Private key of `webhook_cert_path`.")
    liveness_stall_seconds: float = Field(
        300.0,
        gt=0,
        description="/healthz fails (500) when no reconcile round has finished for this long "
        "(rounds run at least every `resync_seconds`): a stalled operator gets restarted.",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the operator's Prometheus /metrics, on all interfaces (0: not "
        "served; the Helm chart sets 9090).",
    )
