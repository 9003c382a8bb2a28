"""What every route needs, built once by the app factory and reached through one dependency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from exportd.api.backends.base import ExportBackend, ExportView
from exportd.api.models import ExportResource
from exportd.contract.catalog import Catalog
from exportd.contract.errors import FieldError, InvalidInput
from exportd.contract.spec import (
    ExportFormat,
    ExportRequestBody,
    ExportSpec,
    Phase,
    ReturnType,
    csv_sidecar_key,
)
from exportd.delivery.outbox import outbox_enabled
from exportd.security.links import HandleLinks
from exportd.security.signing import UrlSigner
from exportd.settings import ApiSettings
from exportd.storage.base import Storage

EXPORTS_ROUTE = "/v1/exports"


@dataclass(frozen=True)
class ApiContext:
    settings: ApiSettings
    catalog: Catalog
    backend: ExportBackend
    storage: Storage
    signer: UrlSigner

    def absolute(self, path: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}{path}"

    def status_url(self, export_id: str) -> str:
        return self.absolute(f"{EXPORTS_ROUTE}/{export_id}")

    def download_url(self, object_key: str, file_name: str) -> tuple[str, int]:
        """A fresh signed link (signed on every read, so it never expires while stored)."""
        return self.storage.signed_url(
            object_key, expires_in=self.settings.link_expiry_seconds, download_name=file_name
        )

    @property
    def handle_links(self) -> HandleLinks:
        return HandleLinks(self.signer.secret, self.signer.public_url)

    def export_link(self, spec: ExportSpec, object_key: str) -> tuple[str, int]:
        """The link a client is given for a finished export, fresh on every read: the storage's
        signed URL (any storage kind), or in ``link_mode: handle`` the API's revocable
        ``/v1/exports/{id}/download`` link with a token."""
        if self.settings.link_mode == "handle":
            expiry = self.settings.link_expiry_seconds
            return self.handle_links.url(spec.id, spec.requested_by, expiry)
        return self.download_url(object_key, spec.file_name)

    def check_request(self, body: ExportRequestBody) -> None:
        """Everything that must hold before a record is created: delivery and variables."""
        if body.return_type is ReturnType.EMAIL and not email_configured(self.settings):
            raise InvalidInput(
                "email delivery is not configured",
                reason="EmailNotConfigured",
                errors=[FieldError("returnType", "email delivery is not configured")],
            )
        self.catalog.bind(body.type, dict(body.variables))

    def _sidecar_link(self, spec: ExportSpec, object_key: str) -> str | None:
        """A signed link to a CSV's times sidecar (default ``header`` layout), if it has one."""
        if spec.format is not ExportFormat.CSV or spec.type not in self.catalog.types:
            return None
        if not self.catalog.get(spec.type).csv_sidecar:
            return None
        key = csv_sidecar_key(object_key)
        return self.storage.signed_url(
            key, expires_in=self.settings.link_expiry_seconds, download_name=key.rsplit("/")[-1]
        )[0]

    def resource(self, view: ExportView) -> ExportResource:
        spec, status = view.spec, view.status
        url = expires_at = metadata_url = None
        if (
            status.phase is Phase.SUCCEEDED
            and status.object_key
            and spec.return_type is ReturnType.URL
        ):
            url, expires = self.export_link(spec, status.object_key)
            expires_at = _from_epoch(expires)
            metadata_url = self._sidecar_link(spec, status.object_key)
        return ExportResource(
            id=spec.id,
            type=spec.type,
            format=spec.format,
            file_name=spec.file_name,
            return_type=spec.return_type,
            variables=dict(spec.variables),
            phase=status.phase,
            queue_position=status.queue_position,
            rows=status.rows,
            bytes=status.bytes,
            sha256=status.sha256,
            attempts=status.attempts,
            url=url,
            expires_at=expires_at,
            metadata_url=metadata_url,
            requested_at=spec.requested_at,
            started_at=status.started_at,
            completed_at=status.completed_at,
            error=status.error,
            delivered=status.delivered,
            conditions=status.conditions or None,
            status_url=self.status_url(spec.id),
        )


def email_configured(settings: ApiSettings) -> bool:
    """E-mail delivery needs an SMTP server and a sender, or the development outbox; without
    them no request may ask for it (a 422 at once, rather than an export that fails later)."""
    smtp = settings.smtp
    return (smtp.host is not None and smtp.sender is not None) or outbox_enabled(settings)


def _from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def get_context(request: Request) -> ApiContext:  # async: no threadpool hop
    context: ApiContext = request.app.state.exportd
    return context


ContextDep = Annotated[ApiContext, Depends(get_context)]
