"""Export backends: where the API hands exports over (embedded runner or Kubernetes CRs)."""

from __future__ import annotations

from exportd.api.backends.base import ExportBackend, ExportView, ExportViewPage
from exportd.catalog import Catalog
from exportd.settings import ApiSettings, Backend


def backend_from_settings(settings: ApiSettings, catalog: Catalog) -> ExportBackend:
    """The backend ``settings.backend`` names; each is imported only when chosen."""
    if settings.backend is Backend.KUBERNETES:
        from exportd.api.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(settings, catalog)
    from exportd.api.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings, catalog)


__all__ = ["ExportBackend", "ExportView", "ExportViewPage", "backend_from_settings"]
