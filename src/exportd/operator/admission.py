"""Admission: which waiting exports may start now, and where the others stand in the queue.

At most ``max_running`` Jobs run cluster-wide and ``max_per_requester`` per requester. Waiting
exports are considered first in, first out (by request time, then namespace and name, so that
equal times still give one order). One whose requester is at its limit does not block those
behind it; it keeps its place and starts when its requester has a free slot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

RequestKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Limits:
    max_running: int
    max_per_requester: int


@dataclass(frozen=True)
class Candidate:
    key: RequestKey
    requester: str
    requested_at: datetime


@dataclass(frozen=True)
class Admission:
    admitted: list[RequestKey] = field(default_factory=list)
    queue_positions: dict[RequestKey, int] = field(default_factory=dict)


def fifo_order(candidate: Candidate) -> tuple[datetime, str, str]:
    return (candidate.requested_at, *candidate.key)


def admit(candidates: Iterable[Candidate], running: Mapping[str, int], limits: Limits) -> Admission:
    """``running`` counts the Jobs still running per requester."""
    per_requester = Counter(running)
    total = sum(per_requester.values())
    admission = Admission()
    waiting: list[RequestKey] = []
    for candidate in sorted(candidates, key=fifo_order):
        if total < limits.max_running and per_requester[candidate.requester] < (
            limits.max_per_requester
        ):
            admission.admitted.append(candidate.key)
            per_requester[candidate.requester] += 1
            total += 1
        else:
            waiting.append(candidate.key)
    admission.queue_positions.update({key: index for index, key in enumerate(waiting, 1)})
    return admission
