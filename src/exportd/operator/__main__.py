"""``python -m exportd.operator``: run the operator without the kopf command line.

Standalone (one replica), watching ``EXPORTD_NAMESPACE`` or, when unset, all namespaces, with
kopf's liveness endpoint on ``EXPORTD_LIVENESS_PORT``.
"""

from __future__ import annotations

import kopf

from exportd.operator.connection import Cluster
from exportd.operator.handlers import register
from exportd.ops.logs import setup_process_logging
from exportd.settings import OperatorSettings


def main() -> None:
    settings = OperatorSettings()
    setup_process_logging(settings)  # JSON lines with secrets redacted, like the API
    registry = kopf.OperatorRegistry()
    register(registry, settings, Cluster())
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=settings.namespace is None,
        namespaces=[settings.namespace] if settings.namespace else (),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
    )


if __name__ == "__main__":
    main()
