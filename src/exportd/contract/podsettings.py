"""Where and how export pods run on a cluster: the operator's ``EXPORTD_EXPORTER_POD`` setting.

Clusters differ in what a pod must carry to be scheduled and served: a node pool (node
selector, tolerations, affinity), a priority class, pull secrets for a private registry, and
annotations that webhooks act on. Two matter for every Job-based workload: a service mesh's
sidecar must stay out (``sidecar.istio.io/inject: "false"``), or the Job never completes; and
a Vault agent must only pre-populate secrets (``vault.hashicorp.com/agent-pre-populate-only:
"true"``), for the same reason. All of it is passed through to the pod unchanged, except that
nothing here may replace the labels the operator finds its Jobs by.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

# Label keys the operator selects and reads its Jobs and pods by; not for users to set.
RESERVED_LABEL_PREFIXES = ("exportd.dev/", "app.kubernetes.io/managed-by")


class ExporterPodConfig(BaseModel):
    """Pod metadata and scheduling of every export Job (JSON, camelCase as in a pod spec)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    annotations: dict[str, str] = Field(
        default_factory=dict,
        description='Pod annotations, e.g. {"sidecar.istio.io/inject": "false"}.',
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra pod labels (not `exportd.dev/*`)."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pod tolerations, as in a pod spec."
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict, description="Pod affinity, as in a pod spec."
    )
    priority_class_name: str | None = Field(None, description="Pod priorityClassName.")
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of Secrets to pull the exporter image with."
    )

    @field_validator("labels")
    @classmethod
    def _not_reserved(cls, labels: dict[str, str]) -> dict[str, str]:
        taken = sorted(key for key in labels if key.startswith(RESERVED_LABEL_PREFIXES))
        if taken:
            raise ValueError(f"labels the operator owns cannot be set: {', '.join(taken)}")
        return labels

    def metadata(self, labels: dict[str, str]) -> dict[str, Any]:
        """The pod template's metadata: the operator's ``labels`` over the extra ones."""
        metadata: dict[str, Any] = {"labels": {**self.labels, **labels}}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return metadata

    def scheduling(self) -> dict[str, Any]:
        """The pod spec fields set here (none when unset, so the manifest stays minimal)."""
        fields: dict[str, Any] = {
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(toleration) for toleration in self.tolerations],
            "affinity": dict(self.affinity),
            "priorityClassName": self.priority_class_name,
            "imagePullSecrets": [{"name": name} for name in self.image_pull_secrets],
        }
        return {key: value for key, value in fields.items() if value}
