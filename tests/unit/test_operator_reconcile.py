"""One reconcile round as a pure function: requests and Jobs in, Jobs and status patches out.

Each case builds the cluster as the apiserver would show it, runs ``plan_round`` and checks the
plan; ``settle`` applies a plan the way the controller would, so idempotence can be checked too.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exportd.contract import exportrequest as er
from exportd.contract.catalog import YAML_BOOLEAN_KEY_HINT, Catalog
from exportd.contract.spec import ExportResult
from exportd.operator.admission import Limits
from exportd.operator.jobs import JobTemplate, RequestRef, job_name, plan_job
from exportd.operator.reconcile import RoundContext, RoundPlan, plan_round
from exportd.security.signing import UrlSigner
from exportd.settings import OperatorSettings

CATALOG = Catalog.load(Path(__file__).resolve().parents[2] / "src/exportd/data/catalog.yaml")
NOW = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)
SIGNER = UrlSigner("unit-test-key", "http://exports.example")
SPEC = {"type": "userExport", "format": "csv", "fileName": "users.csv", "variables": {"x": 1}}
SPEC["variables"] = {"x": 1, "y": 2}
TEMPLATE = JobTemplate.from_settings(OperatorSettings())


def link(key: str, download_name: str) -> tuple[str, int]:
    return SIGNER.sign(key, 3600, now=NOW.timestamp())


def context(max_running: int = 4, per_requester: int = 4) -> RoundContext:
    return RoundContext(NOW, Limits(max_running, per_requester), TEMPLATE, CATALOG, link)


def request(name: str, created: str = "2025-03-04T11:00:00Z", **extra: Any) -> dict[str, Any]:
    spec = {**SPEC, **extra.pop("spec", {})}
    body: dict[str, Any] = {
        "apiVersion": er.API_VERSION,
        "kind": er.KIND,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": created,
        },
        "spec": spec,
    }
    body["metadata"].update(extra.pop("metadata", {}))
    if "status" in extra:
        body["status"] = extra.pop("status")
    return body


def ref(body: dict[str, Any]) -> RequestRef:
    meta = body["metadata"]
    return RequestRef(meta["namespace"], meta["name"], meta["uid"])


def job_for(body: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    job = plan_job(er.export_spec_from_body(body), ref(body), TEMPLATE, deadline_seconds=600)
    job["status"] = status or {"active": 1, "startTime": "2025-03-04T11:00:05Z"}
    return job


def finished(kind: str, reason: str = "", **counts: int) -> dict[str, Any]:
    condition = {"type": kind, "status": "True", "reason": reason, "message": f"{reason} msg"}
    condition["lastTransitionTime"] = "2025-03-04T11:30:00Z"
    status: dict[str, Any] = {"conditions": [condition], **counts}
    if kind == "Complete":
        status["completionTime"] = "2025-03-04T11:30:00Z"
    return status


RESULT = ExportResult(
    rows_read=40000,
    rows_written=40000,
    bytes=4_500_000,
    sha256="cd" * 32,
    object_key="exports/r1/users.csv",
    started_at=datetime(2025, 3, 4, 11, 0, 6, tzinfo=UTC),
    completed_at=datetime(2025, 3, 4, 11, 29, 59, tzinfo=UTC),
).to_json_dict()


def running(name: str, **status: Any) -> dict[str, Any]:
    base = {"phase": "Running", "jobName": job_name(RequestRef("ns", name, f"uid-{name}"))}
    return request(name, status={**base, **status})


def only_patch(plan: RoundPlan, name: str) -> dict[str, Any]:
    [patch] = [p for p in plan.patch if p.name == name]
    return patch.status


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def settle(
    plan: RoundPlan, requests: list[dict[str, Any]], jobs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The cluster after the controller carried the plan out (merge patches on status)."""
    requests, jobs = copy.deepcopy(requests), copy.deepcopy(jobs)
    by_name = {r["metadata"]["name"]: r for r in requests}
    gone = set(plan.delete)
    jobs = [j for j in jobs if (j["metadata"]["namespace"], j["metadata"]["name"]) not in gone]
    patches = [*plan.patch, *(creation.on_created for creation in plan.create)]
    jobs += [dict(creation.manifest) for creation in plan.create]
    for patch in patches:
        status = by_name[patch.name].setdefault("status", {})
        for key, value in patch.status.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
    return requests, jobs


# ---- admission ----------------------------------------------------------------------------


def test_a_new_request_gets_its_planned_job_and_becomes_running() -> None:
    body = request("r1")
    plan = plan_round([body], [], context())

    [creation] = plan.create
    assert creation.manifest == plan_job(
        er.export_spec_from_body(body), ref(body), TEMPLATE, deadline_seconds=600
    )
    status = creation.on_created.status
    assert status["phase"] == "Running" and status["jobName"] == job_name(ref(body))
    assert status["startedAt"] == "2025-03-04T12:00:00Z" and status["attempts"] == 0
    assert conditions(status) == {
        "Ready": ("False", "Running"),
        "Admitted": ("True", "JobCreated"),
        "Finished": ("False", "Running"),
    }
    assert plan.patch == [] and plan.delete == []


def test_over_the_limit_requests_queue_in_order_and_a_settled_round_writes_nothing() -> None:
    requests = [request(f"r{i}", created=f"2025-03-04T11:00:0{i}Z") for i in range(4)]
    plan = plan_round(requests, [], context(max_running=2))

    assert [c.request.name for c in plan.create] == ["r0", "r1"]
    assert {p.name: p.status["queuePosition"] for p in plan.patch} == {"r2": 1, "r3": 2}
    assert conditions(only_patch(plan, "r2"))["Admitted"] == ("False", "Queued")

    requests, jobs = settle(plan, requests, [])
    assert plan_round(requests, jobs, context(max_running=2)).empty


def test_a_finished_job_frees_its_slot_for_the_first_in_the_queue() -> None:
    done = running("r0", result={**RESULT, "objectKey": "exports/r0/u.csv"})
    waiting = [
        request(f"q{i}", status={"phase": "Queued", "queuePosition": i + 1}) for i in range(2)
    ]
    jobs = [job_for(done, finished("Complete", succeeded=1))]
    plan = plan_round([done, *waiting], jobs, context(max_running=1))

    assert [c.request.name for c in plan.create] == ["q0"]
    assert plan.create[0].on_created.status["queuePosition"] is None  # removed
    assert only_patch(plan, "q1")["queuePosition"] == 1
    assert only_patch(plan, "r0")["phase"] == "Succeeded"


# ---- running and finished -----------------------------------------------------------------


def test_a_running_job_shows_attempts_and_rows_so_far() -> None:
    body = running("r1", progress={"rows": 1200, "updatedAt": "2025-03-04T11:59:00Z"})
    job = job_for(body, {"active": 1, "failed": 1, "startTime": "2025-03-04T11:00:05Z"})
    plan = plan_round([body], [job], context())
    status = only_patch(plan, "r1")
    assert status["rows"] == 1200 and status["attempts"] == 2
    assert status["startedAt"] == "2025-03-04T11:00:05Z"  # the Job's start


def test_a_complete_job_with_a_result_succeeds_with_a_signed_link() -> None:
    body = running("r1", result=RESULT, progress={"rows": 40000})
    plan = plan_round([body], [job_for(body, finished("Complete", succeeded=1))], context())
    status = only_patch(plan, "r1")

    assert status["phase"] == "Succeeded"
    assert (status["rows"], status["bytes"]) == (40000, 4_500_000)
    assert status["sha256"] == "cd" * 32 and status["objectKey"] == "exports/r1/users.csv"
    url, expires = link("exports/r1/users.csv", "users.csv")
    assert status["url"] == url
    assert status["expiresAt"] == er.rfc3339(datetime.fromtimestamp(expires, UTC))
    assert status["completedAt"] == "2025-03-04T11:30:00Z" and status["attempts"] == 1
    assert conditions(status)["Finished"] == ("True", "Succeeded")


def test_an_email_export_succeeds_without_a_link() -> None:
    body = running("r1", result=RESULT)
    body["spec"].update(returnType="email", email="a@example.com")
    plan = plan_round([body], [job_for(body, finished("Complete", succeeded=1))], context())
    status = only_patch(plan, "r1")
    assert status["phase"] == "Succeeded" and "url" not in status


def test_an_email_export_carries_the_exporters_delivered_condition() -> None:
    """The exporter reports the e-mail in its result; the CR shows it as a condition (and the
    API, reading the CR, shows it on the export), and a settled round rewrites nothing."""
    sent = {"type": "Delivered", "status": "True", "reason": "Sent", "message": "attached"}
    body = running("r1", result={**RESULT, "delivered": True, "conditions": [sent]})
    body["spec"].update(returnType="email", email="a@example.com")
    jobs = [job_for(body, finished("Complete", succeeded=1))]
    plan = plan_round([body], jobs, context())
    status = only_patch(plan, "r1")

    assert status["delivered"] is True
    assert conditions(status)["Delivered"] == ("True", "Sent")
    [delivered] = [c for c in status["conditions"] if c["type"] == "Delivered"]
    assert delivered["lastTransitionTime"] == er.rfc3339(NOW)
    requests, jobs = settle(plan, [body], jobs)
    assert plan_round(requests, jobs, context()).patch == []
    shown = er.export_status_from_body(requests[0])
    assert [(c.type, c.status, c.reason) for c in shown.conditions] == [
        ("Delivered", "True", "Sent")
    ]


@pytest.mark.parametrize(
    ("return_type", "reason", "expected"),
    [
        ("email", "SmtpStartTlsUnavailable", {"Delivered": ("False", "SmtpStartTlsUnavailable")}),
        ("email", "QueryError", {}),  # failed before any sending
        ("url", "SmtpStartTlsUnavailable", {}),  # not an e-mail export
    ],
)
def test_an_email_export_failed_by_sending_is_delivered_false(
    return_type: str, reason: str, expected: dict[str, tuple[str, str]]
) -> None:
    body = running("r1", lastError={"reason": reason, "message": "the server said no"})
    body["spec"]["returnType"] = return_type
    if return_type == "email":
        body["spec"]["email"] = "a@example.com"
    job = job_for(body, finished("Failed", "PodFailurePolicy", failed=1))
    status = only_patch(plan_round([body], [job], context()), "r1")
    assert status["phase"] == "Failed"
    shown = {k: v for k, v in conditions(status).items() if k == "Delivered"}
    assert shown == expected


def test_a_complete_job_without_a_result_is_a_failure() -> None:
    body = running("r1")
    plan = plan_round([body], [job_for(body, finished("Complete", succeeded=1))], context())
    assert only_patch(plan, "r1")["reason"] == "ResultMissing"


@pytest.mark.parametrize(
    ("job_reason", "last_error", "reason", "message"),
    [
        (
            "PodFailurePolicy",
            {"reason": "QueryError", "message": "no table"},
            "QueryError",
            "no table",
        ),
        ("PodFailurePolicy", None, "PermanentFailure", "PodFailurePolicy msg"),
        (
            "BackoffLimitExceeded",
            {"reason": "SourceUnavailable", "message": "down", "retriable": True},
            "SourceUnavailable",
            "gave up after 3 attempts: down",
        ),
        ("BackoffLimitExceeded", None, "BackoffLimitExceeded", "gave up after 3 attempts"),
        (
            "DeadlineExceeded",
            {"reason": "Cancelled", "message": "SIGTERM"},
            "DeadlineExceeded",
            "the export ran past its deadline: DeadlineExceeded msg",
        ),
    ],
)
def test_a_failed_job_fails_the_request_with_the_most_telling_reason(
    job_reason: str, last_error: dict[str, Any] | None, reason: str, message: str
) -> None:
    body = running("r1", **({"lastError": last_error} if last_error else {}))
    job = job_for(body, finished("Failed", job_reason, failed=3))
    status = only_patch(plan_round([body], [job], context()), "r1")
    assert (status["phase"], status["reason"], status["message"]) == ("Failed", reason, message)
    assert status["attempts"] == 3 and status["completedAt"] == "2025-03-04T11:30:00Z"


# ---- no Job -------------------------------------------------------------------------------


def test_a_job_gone_after_the_result_was_reported_still_succeeds() -> None:
    """E.g. removed by its TTL while the operator was down."""
    status = only_patch(plan_round([running("r1", result=RESULT)], [], context()), "r1")
    assert status["phase"] == "Succeeded" and status["completedAt"] == "2025-03-04T11:29:59Z"


def test_a_job_gone_before_it_finished_fails_the_request() -> None:
    status = only_patch(plan_round([running("r1")], [], context()), "r1")
    assert status["phase"] == "Failed" and status["reason"] == "JobNotFound"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"variables": {"x": 9, "y": 1}}, "InvalidVariables"),
        ({"type": "noSuchType"}, "UnknownExportType"),
        ({"fileName": "users.pdf"}, "InvalidSpec"),
    ],
)
def test_an_invalid_order_fails_without_a_job(spec: dict[str, Any], reason: str) -> None:
    plan = plan_round([request("r1", spec=spec)], [], context())
    assert plan.create == []
    status = only_patch(plan, "r1")
    assert (status["phase"], status["reason"]) == ("Failed", reason)
    assert conditions(status) == {
        "Ready": ("False", "Failed"),
        "Failed": ("True", reason),
        "Stalled": ("True", reason),
        "Admitted": ("False", "Failed"),
        "Finished": ("True", "Failed"),
    }


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"x": 9, "y": 1}, "variables.x: Input should be less than or equal to 5"),
        ({"x": 1}, "variables.y: Field required"),
        ({"x": 1, "true": 2}, f"variables.true: {YAML_BOOLEAN_KEY_HINT}"),
    ],
)
def test_an_invalid_variable_is_named_with_its_rule_in_the_status_message(
    variables: dict[str, Any], named: str
) -> None:
    """The CR's message says which variable broke which rule (the API's errors[] as one line),
    including the hint to quote a key YAML 1.1 turned into "true"."""
    plan = plan_round([request("r1", spec={"variables": variables})], [], context())
    status = only_patch(plan, "r1")
    assert status["reason"] == "InvalidVariables"
    assert named in status["message"]


# ---- cancel and delete --------------------------------------------------------------------


def test_cancelling_a_running_export_deletes_its_job_then_ends_cancelled() -> None:
    body = running("r1")
    body["spec"]["cancel"] = True
    job = job_for(body)
    plan = plan_round([body], [job], context())
    assert plan.delete == [("ns", job["metadata"]["name"])]
    assert only_patch(plan, "r1")["message"].startswith("cancelling")

    gone = plan_round([body], [], context())  # next round: the Job is gone
    status = only_patch(gone, "r1")
    assert (status["phase"], status["reason"]) == ("Cancelled", "Cancelled")


def test_a_cancel_after_the_file_was_stored_is_too_late() -> None:
    body = running("r1", result=RESULT)
    body["spec"]["cancel"] = True
    plan = plan_round([body], [job_for(body)], context())
    assert plan.delete == []
    done = plan_round([body], [job_for(body, finished("Complete", succeeded=1))], context())
    assert only_patch(done, "r1")["phase"] == "Succeeded"


def test_a_queued_export_cancelled_never_gets_a_job() -> None:
    body = request("r1", spec={"cancel": True}, status={"phase": "Queued", "queuePosition": 3})
    plan = plan_round([body], [], context())
    assert plan.create == []
    status = only_patch(plan, "r1")
    assert status["phase"] == "Cancelled" and status["queuePosition"] is None


def test_a_request_being_deleted_loses_its_job_and_gets_no_status() -> None:
    body = running("r1", metadata={"deletionTimestamp": "2025-03-04T11:59:00Z"})
    body["metadata"]["deletionTimestamp"] = "2025-03-04T11:59:00Z"
    job = job_for(body)
    plan = plan_round([body], [job], context())
    assert plan.delete == [("ns", job["metadata"]["name"])] and plan.patch == []


def test_jobs_without_their_request_are_deleted_unless_finished() -> None:
    orphan = job_for(request("gone"))
    done_orphan = job_for(request("done"), finished("Complete", succeeded=1))
    plan = plan_round([], [orphan, done_orphan], context())
    assert plan.delete == [("ns", orphan["metadata"]["name"])]


def test_a_terminal_request_with_a_job_still_running_has_it_deleted() -> None:
    body = request("r1", status={"phase": "Cancelled", "jobName": "x"})
    job = job_for(body)
    assert plan_round([body], [job], context()).delete == [("ns", job["metadata"]["name"])]


def test_a_failed_job_whose_result_was_reported_succeeds() -> None:
    """The Kubernetes API unreachable while an export finished: its result patch landed (the
    answer was lost), the exporter exited 75 and the Job's later attempts failed until the Job
    is Failed (BackoffLimitExceeded). Must hold: Succeeded, with the result's object and
    completion time and the Job's attempts; no failure reason."""
    body = running("r1", result=RESULT, lastError={"reason": "Cancelled", "message": "x"})
    job = job_for(body, finished("Failed", "BackoffLimitExceeded", failed=3))
    status = only_patch(plan_round([body], [job], context()), "r1")
    assert status["phase"] == "Succeeded", status
    assert status["objectKey"] == "exports/r1/users.csv" and status["attempts"] == 3
    assert status["completedAt"] == "2025-03-04T11:29:59Z"
    assert status.get("reason") is None


def test_a_round_keeps_the_expired_condition_housekeeping_recorded() -> None:
    """Housekeeping records the expiry as ``expiredAt``; a round that planned from a view
    without the Expired condition (its list replaced it) restores it from that field."""
    body = request(
        "r1",
        status={
            "phase": "Succeeded",
            "completedAt": "2025-03-01T00:00:00Z",
            "expiredAt": "2025-03-04T00:00:00Z",
        },
    )
    status = only_patch(plan_round([body], [], context()), "r1")
    expired = [c for c in status["conditions"] if c["type"] == "Expired"]
    assert expired == [er.expired_condition("2025-03-04T00:00:00Z")]
