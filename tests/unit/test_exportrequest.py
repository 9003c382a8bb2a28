"""The ExportRequest schema module: CR body <-> ExportSpec / ExportStatus, and the patches the
exporter writes. Pure functions; no cluster."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from exportd.contract import exportrequest as er
from exportd.contract.errors import PermanentFailure, TransientFailure
from exportd.contract.spec import ExportResult, ExportSpec, Phase, ReturnType

LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def make_spec(**changes: Any) -> ExportSpec:
    values: dict[str, Any] = {
        "id": "exp-0123",
        "type": "userExport",
        "format": "xlsx",
        "file_name": "users.xlsx",
        "variables": {"x": 1, "y": 2, "name": "a b", "flag": True, "none": None},
        "requested_by": "alice@example.com",
        "requested_at": datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
    }
    values.update(changes)
    return ExportSpec(**values)


def result(**changes: Any) -> ExportResult:
    values: dict[str, Any] = {
        "rows_read": 10,
        "rows_written": 10,
        "bytes": 1234,
        "sha256": "ab" * 32,
        "object_key": "exports/exp-0123/users.xlsx",
        "started_at": datetime(2025, 3, 4, 5, 6, 8, tzinfo=UTC),
        "completed_at": datetime(2025, 3, 4, 5, 6, 9, tzinfo=UTC),
    }
    values.update(changes)
    return ExportResult(**values)


def test_a_spec_survives_the_round_trip_through_a_cr_body() -> None:
    spec = make_spec(return_type=ReturnType.EMAIL, email="bob@example.com", cancel=True)
    body = er.body_from_export_spec(spec, "team-a")
    body["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"  # not the request time
    assert er.export_spec_from_body(body) == spec


def test_the_cr_is_named_by_the_export_id_and_labelled_by_requester() -> None:
    spec = make_spec()
    body = er.body_from_export_spec(spec, "team-a", labels={"extra": "yes"})
    assert body["apiVersion"] == "exportd.dev/v1alpha1" and body["kind"] == "ExportRequest"
    assert body["metadata"]["name"] == "exp-0123"
    assert body["metadata"]["namespace"] == "team-a"
    assert body["metadata"]["labels"] == {
        er.LABEL_REQUESTER: er.requester_label("alice@example.com"),
        "extra": "yes",
    }
    assert "status" not in body and "id" not in body["spec"]


def test_requester_labels_are_valid_label_values_and_tell_requesters_apart() -> None:
    labels = {er.requester_label(who) for who in ("alice@example.com", "bob", "x" * 253, "é")}
    assert len(labels) == 4
    assert all(LABEL_VALUE.match(label) for label in labels)
    assert er.requester_label("bob") == er.requester_label("bob")


def test_a_hand_written_cr_gets_its_requester_from_the_namespace_and_time_from_creation() -> None:
    body = {
        "metadata": {
            "name": "monthly",
            "namespace": "finance",
            "creationTimestamp": "2025-06-01T08:00:00Z",
        },
        "spec": {"type": "userExport", "fileName": "Users.CSV", "variables": {"x": 1}},
    }
    spec = er.export_spec_from_body(body)
    assert spec.id == "monthly"
    assert spec.requested_by == "kubernetes:finance"
    assert spec.requested_at == datetime(2025, 6, 1, 8, tzinfo=UTC)
    assert spec.format.value == "csv"  # inferred from the file name


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "userExport", "fileName": "a.xlsx", "format": "csv"},
        {"type": "userExport", "fileName": "a.pdf"},
        {"type": "userExport", "fileName": "a.csv", "returnType": "email"},
        {"type": "userExport", "fileName": "a.csv", "surprise": 1},
        {"type": "userExport", "fileName": "a.csv", "variables": {"x": [1, 2]}},
    ],
)
def test_an_invalid_cr_spec_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        er.export_spec_from_body({"metadata": {"name": "n", "namespace": "d"}, "spec": spec})


def test_a_new_cr_without_status_reads_as_pending() -> None:
    status = er.export_status_from_body({"metadata": {"name": "n"}, "spec": {}})
    assert status.phase is Phase.PENDING and status.attempts == 0 and status.error is None


def test_while_running_rows_come_from_the_exporters_progress() -> None:
    body = {"status": {"phase": "Running", "progress": {"rows": 500}, "attempts": 1}}
    status = er.export_status_from_body(body)
    assert status.phase is Phase.RUNNING and status.rows == 500 and status.attempts == 1


def test_a_succeeded_cr_reads_with_its_link_and_expiry() -> None:
    body = {
        "status": {
            "phase": "Succeeded",
            "rows": 10,
            "bytes": 1234,
            "sha256": "ab" * 32,
            "objectKey": "exports/x/users.xlsx",
            "url": "http://h/v1/files/exports/x/users.xlsx?expires=1&signature=s",
            "expiresAt": "2025-03-05T05:06:09Z",
            "completedAt": "2025-03-04T05:06:09Z",
            "progress": {"rows": 7},
            "somethingNewer": {"ignored": True},
        }
    }
    status = er.export_status_from_body(body)
    assert status.rows == 10 and status.bytes == 1234
    assert status.url is not None and status.url.startswith("http://h/v1/files/")
    assert status.expires_at == datetime(2025, 3, 5, 5, 6, 9, tzinfo=UTC)
    assert status.error is None


def test_a_failed_cr_reads_with_its_reason_and_message() -> None:
    body = {"status": {"phase": "Failed", "reason": "QueryError", "message": "no table"}}
    status = er.export_status_from_body(body)
    assert status.error is not None
    assert (status.error.reason, status.error.message) == ("QueryError", "no table")


def test_the_exporter_patches_touch_only_its_own_status_fields() -> None:
    now = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert er.progress_patch(42, now) == {
        "status": {"progress": {"rows": 42, "updatedAt": "2025-03-04T05:06:07Z"}}
    }
    stored = er.result_patch(result(), now)["status"]
    assert set(stored) == {"progress", "result"}
    assert ExportResult.model_validate(stored["result"]) == result()
    failed = er.error_patch(PermanentFailure("bad query", reason="QueryError"))
    reported = {"reason": "QueryError", "message": "bad query", "retriable": False}
    assert failed == {"status": {"lastError": reported}}
    assert er.error_patch(TransientFailure("down"))["status"]["lastError"]["retriable"] is True


def test_timestamps_are_written_as_kubernetes_does() -> None:
    moment = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    assert er.rfc3339(moment) == "2025-03-04T05:06:07Z"
    assert er.rfc3339(moment, precise=True) == "2025-03-04T05:06:07.890123Z"
    assert er.parse_time("2025-03-04T05:06:07Z") == moment.replace(microsecond=0)
    assert er.parse_time(None) is None
