"""Admission: N cluster-wide, M per requester, first in first out, queue positions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from exportd.operator.admission import Candidate, Limits, admit

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def candidate(name: str, requester: str = "a", seconds: int = 0) -> Candidate:
    return Candidate(("ns", name), requester, T0 + timedelta(seconds=seconds))


def test_the_oldest_are_admitted_up_to_the_global_limit_and_the_rest_numbered() -> None:
    waiting = [candidate(f"r{i}", requester=f"u{i}", seconds=10 - i) for i in range(5)]
    admission = admit(waiting, {}, Limits(max_running=2, max_per_requester=5))
    assert admission.admitted == [("ns", "r4"), ("ns", "r3")]
    assert admission.queue_positions == {("ns", "r2"): 1, ("ns", "r1"): 2, ("ns", "r0"): 3}


def test_running_jobs_take_their_slots() -> None:
    admission = admit([candidate("new")], {"a": 1, "b": 1}, Limits(2, 5))
    assert admission.admitted == [] and admission.queue_positions == {("ns", "new"): 1}


def test_a_requester_at_its_limit_waits_without_blocking_others() -> None:
    waiting = [
        candidate("a1", "alice", 1),
        candidate("a2", "alice", 2),
        candidate("b1", "bob", 3),
    ]
    admission = admit(waiting, {}, Limits(max_running=10, max_per_requester=1))
    assert admission.admitted == [("ns", "a1"), ("ns", "b1")]
    assert admission.queue_positions == {("ns", "a2"): 1}


def test_equal_times_are_ordered_by_namespace_and_name() -> None:
    waiting = [candidate("b"), candidate("a"), Candidate(("aa", "z"), "u", T0)]
    admission = admit(waiting, {}, Limits(1, 1))
    assert admission.admitted == [("aa", "z")]
    assert admission.queue_positions == {("ns", "a"): 1, ("ns", "b"): 2}


def test_nothing_waiting_admits_nothing() -> None:
    admission = admit([], {"a": 3}, Limits(2, 2))
    assert admission.admitted == [] and admission.queue_positions == {}
