"""Export backends: where the API hands exports over (embedded runner or Kubernetes CRs)."""

from __future__ import annotations

import importlib

from exportd.api.backends.base import ExportBackend, ExportView, ExportViewPage
from exportd.contract.catalog import Catalog
from exportd.settings import ApiSettings, Backend

# Each backend is imported only when chosen, so embedded mode never loads the Kubernetes client.
BACKEND_CLASSES = {
    Backend.EMBEDDED: "exportd.api.backends.embedded:EmbeddedBackend",
    Backend.KUBERNETES: "exportd.api.backends.kubernetes:KubernetesBackend",
}


def backend_from_settings(settings: ApiSettings, catalog: Catalog) -> ExportBackend:
    """The backend ``settings.backend`` names, built as ``Class(settings, catalog)``."""
    module_name, class_name = BACKEND_CLASSES[settings.backend].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: ExportBackend = backend_class(settings, catalog)
    return backend


__all__ = ["ExportBackend", "ExportView", "ExportViewPage", "backend_from_settings"]
