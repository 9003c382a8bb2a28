"""Where the Kubernetes API is, for both of the operator's clients: kopf and its own.

In a pod the service account is used, elsewhere the kubeconfig; an explicit server (tests, or an
API reached through a proxy) overrides both. kopf gets its credentials from the same loaded
configuration through a login handler, so the two clients can never talk to different clusters,
and kopf never falls back to a login of its own choosing.
"""

from __future__ import annotations

from dataclasses import dataclass

import kopf
from kubernetes.aio.client import Configuration
from kubernetes.aio.config import ConfigException, load_incluster_config, load_kube_config


@dataclass(frozen=True)
class Cluster:
    server: str | None = None  # None: in-cluster service account, else the kubeconfig
    token: str | None = None
    insecure: bool = False

    async def configuration(self) -> Configuration:
        config = Configuration()
        if self.server is not None:
            config.host = self.server.rstrip("/")
            config.verify_ssl = not self.insecure
            if self.token:
                config.api_key = {"BearerToken": self.token}
                config.api_key_prefix = {"BearerToken": "Bearer"}
            return config
        try:
            load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        except ConfigException:
            await load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
        return config

    async def connection_info(self) -> kopf.ConnectionInfo:
        config = await self.configuration()
        header = await config.get_api_key_with_prefix("BearerToken")
        scheme, _, token = (header or "").partition(" ")
        if not token:
            scheme, token = "", scheme
        return kopf.ConnectionInfo(
            server=config.host,
            ca_path=config.ssl_ca_cert,
            insecure=not config.verify_ssl,
            scheme=scheme or None,
            token=token or None,
            certificate_path=config.cert_file,
            private_key_path=config.key_file,
        )
