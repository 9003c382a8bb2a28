"""The planned Job of an export, field by field, and Jobs read back. Pure; no cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from tests.specs import seed_spec

from exportd.contract import exportrequest as er
from exportd.contract.spec import ExportSpec
from exportd.operator.jobs import (
    JobOutcome,
    JobTemplate,
    RequestRef,
    job_name,
    job_state,
    plan_job,
)
from exportd.settings import OperatorSettings

REF = RequestRef("team-a", "exp-0123", "8d3f1c5e-0000-4000-8000-000000000001")


def make_spec() -> ExportSpec:
    return seed_spec(
        id="exp-0123", file_name="users.csv", requested_at=datetime(2025, 3, 4, tzinfo=UTC)
    )


@pytest.fixture
def template() -> JobTemplate:
    settings = OperatorSettings(
        exporter_image="registry.example/exportd/exporter:1.2.3",
        exporter_env_config_map="exporter-env",
        exporter_env_secret="exporter-secrets",
        job_backoff_limit=2,
        job_ttl_seconds=900,
    )
    return JobTemplate.from_settings(settings)


@pytest.fixture
def job(template: JobTemplate) -> dict[str, Any]:
    return plan_job(make_spec(), REF, template, deadline_seconds=600)


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def test_the_job_name_is_derived_from_the_request_and_stable() -> None:
    assert job_name(REF) == job_name(RequestRef("other-ns", "exp-0123", REF.uid))
    assert job_name(REF).startswith("exp-0123-")
    again = RequestRef(REF.namespace, REF.name, "8d3f1c5e-0000-4000-8000-000000000002")
    assert job_name(again) != job_name(REF)  # same name, new request: a new Job


def test_job_names_fit_a_label_value_even_for_the_longest_request_names() -> None:
    longest = RequestRef("ns", "e" * 62 + "x", REF.uid)
    name = job_name(longest)
    assert len(name) <= 63 and not name.startswith("-") and "--" not in name


def test_the_job_is_owned_by_its_request_and_labelled(job: dict[str, Any]) -> None:
    meta = job["metadata"]
    assert meta["name"] == job_name(REF) and meta["namespace"] == "team-a"
    assert "generateName" not in meta
    assert meta["ownerReferences"] == [
        {
            "apiVersion": er.API_VERSION,
            "kind": er.KIND,
            "name": "exp-0123",
            "uid": REF.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"][er.LABEL_EXPORT] == "exp-0123"
    assert meta["labels"][er.LABEL_REQUESTER] == er.requester_label("alice")
    assert meta["labels"][er.LABEL_MANAGED_BY] == "exportd-operator"
    assert job["spec"]["template"]["metadata"]["labels"] == meta["labels"]


def test_retries_deadline_and_cleanup_follow_the_exit_codes(job: dict[str, Any]) -> None:
    spec = job["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == 900
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["completions"] == spec["parallelism"] == 1
    assert spec["podFailurePolicy"]["rules"] == [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "exporter", "operator": "In", "values": [2, 3]},
        },
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]
    assert pod_of(job)["restartPolicy"] == "Never"


def test_the_pod_runs_restricted_with_a_read_only_root_and_a_private_tmp(
    job: dict[str, Any],
) -> None:
    pod = pod_of(job)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    [container] = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}}]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert pod["serviceAccountName"] == "exportd-exporter"
    assert pod["enableServiceLinks"] is False


def test_the_container_runs_the_exporter_image_on_this_spec_reporting_to_the_request(
    job: dict[str, Any],
) -> None:
    [container] = pod_of(job)["containers"]
    assert container["name"] == "exporter"
    assert container["image"] == "registry.example/exportd/exporter:1.2.3"
    assert container["command"] == ["python", "-m", "exportd.exporter"]
    flag, spec_json = container["args"]
    assert flag == "--spec-json"
    assert ExportSpec.model_validate(json.loads(spec_json)) == make_spec()
    env = {item["name"]: item for item in container["env"]}
    assert env["EXPORTD_REPORTER"]["value"] == "kubernetes"
    assert env["EXPORTD_KUBE_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert env["EXPORTD_TEMP_DIR"]["value"] == "/tmp"
    assert container["envFrom"] == [
        {"configMapRef": {"name": "exporter-env"}},
        {"secretRef": {"name": "exporter-secrets"}},
    ]


def test_a_data_claim_is_mounted_as_the_exporters_data_directory() -> None:
    template = JobTemplate.from_settings(OperatorSettings(exporter_data_claim="exportd-files"))
    pod = pod_of(plan_job(make_spec(), REF, template, deadline_seconds=60))
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "exportd-files"}} in pod[
        "volumes"
    ]
    [container] = pod["containers"]
    assert {"name": "data", "mountPath": "/var/lib/exportd"} in container["volumeMounts"]
    assert {"name": "EXPORTD_DATA_DIR", "value": "/var/lib/exportd"} in container["env"]


SCHEDULING_FIELDS = {"nodeSelector", "tolerations", "affinity", "priorityClassName"}


def test_by_default_the_pod_has_no_scheduling_fields_and_no_annotations(
    job: dict[str, Any],
) -> None:
    assert not SCHEDULING_FIELDS & set(pod_of(job)) and "imagePullSecrets" not in pod_of(job)
    assert "annotations" not in job["spec"]["template"]["metadata"]


def test_pod_metadata_and_scheduling_come_from_the_exporter_pod_setting() -> None:
    """What a cluster needs of export pods (node pool, mesh sidecar off, pull secret) is
    passed through; the operator's labels stay its own."""
    pod_config = {
        "annotations": {"sidecar.istio.io/inject": "false"},
        "labels": {"team": "data"},
        "nodeSelector": {"pool": "exports"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {}},
        "priorityClassName": "batch-low",
        "imagePullSecrets": ["registry-credentials"],
    }
    settings = OperatorSettings.model_validate({"exporter_pod": pod_config})
    job = plan_job(make_spec(), REF, JobTemplate.from_settings(settings), deadline_seconds=60)
    metadata, pod = job["spec"]["template"]["metadata"], pod_of(job)
    assert metadata["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert metadata["labels"]["team"] == "data"
    assert metadata["labels"][er.LABEL_EXPORT] == REF.name
    assert job["metadata"]["labels"].get("team") is None  # the Job's own labels are unchanged
    assert {key: pod[key] for key in SCHEDULING_FIELDS} == {
        "nodeSelector": {"pool": "exports"},
        "tolerations": pod_config["tolerations"],
        "affinity": {"podAntiAffinity": {}},
        "priorityClassName": "batch-low",
    }
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]


@pytest.mark.parametrize("label", [er.LABEL_EXPORT, er.LABEL_MANAGED_BY, "exportd.dev/other"])
def test_the_operators_own_labels_cannot_be_set_on_export_pods(label: str) -> None:
    with pytest.raises(ValidationError, match="labels the operator owns"):
        OperatorSettings.model_validate({"exporter_pod": {"labels": {label: "x"}}})


def job_body(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "exp-0123-abcdef",
            "namespace": "team-a",
            "labels": {er.LABEL_REQUESTER: "r"},
            "ownerReferences": [{"kind": er.KIND, "uid": REF.uid, "controller": True}],
            **meta,
        },
        "status": status,
    }


def condition(kind: str, reason: str = "", status: str = "True") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": f"{kind} {reason}",
        "lastTransitionTime": "2025-03-04T00:01:00Z",
    }


def test_a_job_is_finished_only_when_complete_or_failed_is_true() -> None:
    running = job_state(job_body({"active": 1, "startTime": "2025-03-04T00:00:00Z"}))
    assert running.outcome is JobOutcome.RUNNING and running.attempts == 1
    assert running.owner_uid == REF.uid and running.requester == "r"
    terminating = job_state(job_body({"active": 1, "conditions": [condition("FailureTarget")]}))
    assert terminating.outcome is JobOutcome.RUNNING
    done = job_state(
        job_body(
            {
                "succeeded": 1,
                "failed": 1,
                "conditions": [condition("SuccessCriteriaMet"), condition("Complete")],
                "completionTime": "2025-03-04T00:02:00Z",
            }
        )
    )
    assert done.outcome is JobOutcome.COMPLETE and done.attempts == 2
    assert done.completed_at == datetime(2025, 3, 4, 0, 2, tzinfo=UTC)


def test_a_failed_job_carries_its_reason_and_failure_time() -> None:
    failed = job_state(
        job_body({"failed": 3, "conditions": [condition("Failed", "BackoffLimitExceeded")]})
    )
    assert failed.outcome is JobOutcome.FAILED
    assert failed.reason == "BackoffLimitExceeded" and failed.attempts == 3
    assert failed.completed_at == datetime(2025, 3, 4, 0, 1, tzinfo=UTC)
    not_yet = job_state(job_body({"conditions": [condition("Failed", "X", status="False")]}))
    assert not_yet.outcome is JobOutcome.RUNNING


def test_a_job_being_deleted_or_without_an_owner_reads_so() -> None:
    state = job_state(job_body({}, deletionTimestamp="2025-03-04T00:00:00Z", ownerReferences=[]))
    assert state.deleting and state.owner_uid is None
