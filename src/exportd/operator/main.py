"""``kopf run -m exportd.operator.main``: the operator's handlers on kopf's default registry.

Settings come from ``EXPORTD_*`` (:class:`~exportd.settings.OperatorSettings`); the Kubernetes
API is found in-cluster through the pod's service account, else through the kubeconfig.
"""

from __future__ import annotations

import kopf

from exportd.operator.connection import Cluster
from exportd.operator.handlers import register
from exportd.settings import OperatorSettings

runtime = register(kopf.get_default_registry(), OperatorSettings(), Cluster())
