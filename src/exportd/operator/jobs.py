"""The Job of one export: planned from its ExportRequest, and read back from the cluster.

Planning is pure so every field of the manifest is unit-tested. The name is derived from the
request (its name and uid), never ``generateName``: creating the same Job twice answers 409, so
an operator restarted halfway through creates no second Job. The exporter's exit codes
(:mod:`exportd.contract.errors`) drive the Job: 2 and 3 fail it at once (``podFailurePolicy``
FailJob),
anything else is retried up to ``backoffLimit``; a pod evicted or preempted (DisruptionTarget) is
replaced without counting as an attempt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from exportd.contract import exportrequest as er
from exportd.contract.errors import ExitCode
from exportd.contract.podsettings import ExporterPodConfig
from exportd.contract.spec import ExportSpec
from exportd.security.reports import report_key
from exportd.settings import OperatorSettings

CONTAINER_NAME = "exporter"
MANAGED_BY = "exportd-operator"
NAME_MAX = 63  # Job names become pod label values
TMP_MOUNT = "/tmp"  # noqa: S108 - an emptyDir volume, private to the pod
DATA_MOUNT = "/var/lib/exportd"
CATALOG_MOUNT = "/etc/exportd/catalog"
CATALOG_KEY = "catalog.yaml"
SECRETS_MOUNT = "/etc/exportd/secrets"
TERMINATION_GRACE_SECONDS = 30
NON_RETRIABLE_EXIT_CODES = (int(ExitCode.USAGE), int(ExitCode.PERMANENT))


@dataclass(frozen=True)
class JobTemplate:
    """What every export Job shares; from :class:`~exportd.settings.OperatorSettings`."""

    image: str
    command: tuple[str, ...]
    service_account: str
    env_secret: str | None = None
    env_config_map: str | None = None
    data_claim: str | None = None
    catalog_config_map: str | None = None
    secret_files: str | None = None
    run_as_user: int = 10001
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "250m", "memory": "256Mi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "1Gi"})
    tmp_size: str = "10Gi"
    backoff_limit: int = 2
    ttl_seconds: int = 3600
    pod: ExporterPodConfig = field(default_factory=ExporterPodConfig)
    report_secret: str | None = None  # each Job gets its request's key (exportd.security.reports)

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> JobTemplate:
        return cls(
            image=settings.exporter_image,
            command=tuple(settings.exporter_command),
            service_account=settings.exporter_service_account,
            env_secret=settings.exporter_env_secret,
            env_config_map=settings.exporter_env_config_map,
            data_claim=settings.exporter_data_claim,
            catalog_config_map=settings.exporter_catalog_config_map,
            secret_files=settings.exporter_secret_files,
            run_as_user=settings.exporter_run_as_user,
            requests={
                "cpu": settings.exporter_cpu_request,
                "memory": settings.exporter_memory_request,
            },
            limits={"cpu": settings.exporter_cpu_limit, "memory": settings.exporter_memory_limit},
            tmp_size=settings.exporter_tmp_size,
            backoff_limit=settings.job_backoff_limit,
            ttl_seconds=settings.job_ttl_seconds,
            pod=settings.exporter_pod,
            report_secret=settings.resolved_report_secret(),
        )


@dataclass(frozen=True)
class RequestRef:
    """The owning ExportRequest, as an owner reference needs it."""

    namespace: str
    name: str
    uid: str


def job_name(request: RequestRef) -> str:
    """``<request name>-<6 hex of its uid>``: stable across restarts, distinct for a request
    deleted and created again under the same name (whose old Job may still exist)."""
    suffix = hashlib.sha256(request.uid.encode()).hexdigest()[:6]
    base = request.name[: NAME_MAX - len(suffix) - 1].rstrip("-")
    return f"{base}-{suffix}"


def job_labels(request: RequestRef, spec: ExportSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "exportd-exporter",
        er.LABEL_MANAGED_BY: MANAGED_BY,
        er.LABEL_EXPORT: request.name,
        er.LABEL_REQUESTER: er.requester_label(spec.requested_by),
    }


def plan_job(
    spec: ExportSpec, request: RequestRef, template: JobTemplate, *, deadline_seconds: int
) -> dict[str, Any]:
    """The Job manifest that runs ``spec`` once (with retries) for ``request``."""
    labels = job_labels(request, spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(request),
            "namespace": request.namespace,
            "labels": labels,
            "ownerReferences": [_owner_reference(request)],
        },
        "spec": {
            "backoffLimit": template.backoff_limit,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": template.ttl_seconds,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": _pod_failure_policy(),
            "completions": 1,
            "parallelism": 1,
            "template": {
                "metadata": template.pod.metadata(labels),
                "spec": _pod_spec(spec, template, request.uid),
            },
        },
    }


def _owner_reference(request: RequestRef) -> dict[str, Any]:
    return {
        "apiVersion": er.API_VERSION,
        "kind": er.KIND,
        "name": request.name,
        "uid": request.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": list(NON_RETRIABLE_EXIT_CODES),
                },
            },
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
    }


def _pod_spec(spec: ExportSpec, template: JobTemplate, uid: str) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": template.tmp_size}}]
    if template.data_claim:
        volumes.append(
            {"name": "data", "persistentVolumeClaim": {"claimName": template.data_claim}}
        )
    volumes.extend(_config_volumes(template))
    return {
        "restartPolicy": "Never",
        "serviceAccountName": template.service_account,
        "automountServiceAccountToken": True,  # the exporter reports on the request's status
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": template.run_as_user,
            "runAsGroup": template.run_as_user,
            "fsGroup": template.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec, template, uid)],
        "volumes": volumes,
        **template.pod.scheduling(),
    }


def _config_volumes(template: JobTemplate) -> list[dict[str, Any]]:
    """The catalog and the secret files, read-only; group-readable only (``fsGroup``)."""
    volumes: list[dict[str, Any]] = []
    if template.catalog_config_map:
        items = [{"key": CATALOG_KEY, "path": CATALOG_KEY}]
        volumes.append(
            {"name": "catalog", "configMap": {"name": template.catalog_config_map, "items": items}}
        )
    if template.secret_files:
        volumes.append(
            {
                "name": "secret-files",
                "secret": {"secretName": template.secret_files, "defaultMode": 0o440},
            }
        )
    return volumes


def _container(spec: ExportSpec, template: JobTemplate, uid: str) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP_MOUNT}]
    env: list[dict[str, Any]] = [
        {"name": "EXPORTD_REPORTER", "value": "kubernetes"},
        {
            "name": "EXPORTD_KUBE_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "EXPORTD_TEMP_DIR", "value": TMP_MOUNT},
    ]
    if template.report_secret:
        key = report_key(template.report_secret, uid)
        env.append({"name": "EXPORTD_REPORT_KEY", "value": key})
    if template.data_claim:
        mounts.append({"name": "data", "mountPath": DATA_MOUNT})
        env.append({"name": "EXPORTD_DATA_DIR", "value": DATA_MOUNT})
    if template.catalog_config_map:
        mounts.append({"name": "catalog", "mountPath": CATALOG_MOUNT, "readOnly": True})
        env.append({"name": "EXPORTD_CATALOG_PATH", "value": f"{CATALOG_MOUNT}/{CATALOG_KEY}"})
    if template.secret_files:
        mounts.append({"name": "secret-files", "mountPath": SECRETS_MOUNT, "readOnly": True})
    env_from: list[dict[str, Any]] = []
    if template.env_config_map:
        env_from.append({"configMapRef": {"name": template.env_config_map}})
    if template.env_secret:
        env_from.append({"secretRef": {"name": template.env_secret}})
    return {
        "name": CONTAINER_NAME,
        "image": template.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(template.command),
        "args": ["--spec-json", spec.model_dump_json(by_alias=True, exclude_none=True)],
        "env": env,
        "envFrom": env_from,
        "resources": {"requests": dict(template.requests), "limits": dict(template.limits)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }


# ---- reading a Job back ------------------------------------------------------------------


class JobOutcome(StrEnum):
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobState:
    """What the operator needs to know about one of its Jobs."""

    namespace: str
    name: str
    owner_uid: str | None
    requester: str
    outcome: JobOutcome
    reason: str = ""
    message: str = ""
    attempts: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    deleting: bool = False

    @property
    def finished(self) -> bool:
        return self.outcome is not JobOutcome.RUNNING


def job_state(body: Mapping[str, Any]) -> JobState:
    """Read a Job. It is finished only once ``Complete`` or ``Failed`` is True: the earlier
    ``SuccessCriteriaMet``/``FailureTarget`` still have pods terminating."""
    meta = er.metadata(body)
    status: Mapping[str, Any] = body.get("status") or {}
    outcome, reason, message, finished_at = JobOutcome.RUNNING, "", "", None
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True" or condition.get("type") not in ("Complete", "Failed"):
            continue
        outcome = JobOutcome(condition["type"])
        reason, message = condition.get("reason", ""), condition.get("message", "")
        finished_at = er.parse_time(condition.get("lastTransitionTime"))
    attempts = sum(int(status.get(key) or 0) for key in ("active", "succeeded", "failed"))
    return JobState(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        owner_uid=_controller_uid(meta),
        requester=(meta.get("labels") or {}).get(er.LABEL_REQUESTER, ""),
        outcome=outcome,
        reason=reason,
        message=message,
        attempts=attempts,
        started_at=er.parse_time(status.get("startTime")),
        completed_at=er.parse_time(status.get("completionTime")) or finished_at,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _controller_uid(meta: Mapping[str, Any]) -> str | None:
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller") and owner.get("kind") == er.KIND:
            uid: str | None = owner.get("uid")
            return uid
    return None
