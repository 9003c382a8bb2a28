"""Kubernetes Events on ExportRequests: what ``kubectl describe exr`` and ``kubectl events`` show.

Normal ``Queued``, ``JobCreated``, ``Running``, ``Succeeded``, ``Delivered``, ``Cancelled`` and
Warning ``Failed``, ``Retrying``, ``JobRejected``, each with a message saying what happened.
Which events a status change means is decided here, purely, from the status before and the
patch; the controller posts them after the patch is written. An event's name is derived from
the request's uid and the transition (its reason and attempt), so a round planned twice (a
failed call retried, an operator restarted) posts it once: the second create answers 409.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exportd.contract import exportrequest as er
from exportd.contract.spec import Phase

NORMAL = "Normal"
WARNING = "Warning"
COMPONENT = "exportd-operator"


@dataclass(frozen=True)
class EventNote:
    type: str  # Normal or Warning
    reason: str
    message: str
    key: str = ""  # what makes this occurrence distinct (e.g. the attempt)


@dataclass(frozen=True)
class InvolvedObject:
    namespace: str
    name: str
    uid: str


def transition_events(current: Mapping[str, Any], patch: Mapping[str, Any]) -> list[EventNote]:
    """The events a status going from ``current`` by the merge ``patch`` means."""
    after = {**current, **patch}
    notes: list[EventNote] = []
    phase = after.get("phase")
    if phase != current.get("phase"):
        note = _phase_event(phase, after)
        if note is not None:
            notes.append(note)
    attempts, before = int(after.get("attempts") or 0), int(current.get("attempts") or 0)
    if phase == Phase.RUNNING.value and attempts > max(before, 1):
        error = (current.get("lastError") or {}).get("message") or "the pod failed"
        message = f"attempt {attempts - 1} failed ({error}); the Job runs attempt {attempts}"
        notes.append(EventNote(WARNING, "Retrying", message, key=str(attempts)))
    if after.get("delivered") is True and current.get("delivered") is not True:
        notes.append(EventNote(NORMAL, "Delivered", "the file was sent by e-mail"))
    return notes


def _phase_event(phase: str | None, status: Mapping[str, Any]) -> EventNote | None:
    if phase == Phase.QUEUED.value:
        position = status.get("queuePosition")
        return EventNote(NORMAL, "Queued", f"waiting for a free export slot (position {position})")
    if phase == Phase.RUNNING.value:
        return EventNote(NORMAL, "Running", f"the export runs as Job {status.get('jobName')}")
    if phase == Phase.SUCCEEDED.value:
        done = f"{status.get('rows')} rows, {status.get('bytes')} bytes, {status.get('objectKey')}"
        return EventNote(NORMAL, "Succeeded", f"the file is stored: {done}")
    if phase == Phase.FAILED.value:
        return EventNote(WARNING, "Failed", f"{status.get('reason')}: {status.get('message')}")
    if phase == Phase.CANCELLED.value:
        return EventNote(NORMAL, "Cancelled", str(status.get("message") or "cancelled"))
    return None


def event_body(involved: InvolvedObject, note: EventNote, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about ``involved``, named after it and the transition."""
    digest = hashlib.sha256(f"{involved.uid}/{note.reason}/{note.key}".encode()).hexdigest()
    stamp = er.rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{involved.name}.{digest[:16]}", "namespace": involved.namespace},
        "involvedObject": {
            "apiVersion": er.API_VERSION,
            "kind": er.KIND,
            "namespace": involved.namespace,
            "name": involved.name,
            "uid": involved.uid,
        },
        "type": note.type,
        "reason": note.reason,
        "message": note.message[:1024],
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": COMPONENT},
        "reportingComponent": f"{er.GROUP}/operator",
        "reportingInstance": COMPONENT,
    }
