"""The operator's watch-fed store: a late (older) watch event never takes back what the
controller wrote through, deletions remove, and a full listing replaces what it does not hold."""

from __future__ import annotations

from typing import Any

from exportd.operator.cache import Store


def obj(name: str, version: int, **extra: Any) -> dict[str, Any]:
    meta = {"namespace": "ns", "name": name, "resourceVersion": str(version)}
    return {"metadata": meta, **extra}


def test_an_older_event_does_not_replace_a_newer_write() -> None:
    store = Store()
    store.put(obj("a", 5, status={"phase": "Running"}))  # the controller's own patch
    store.observe("MODIFIED", obj("a", 4, status={"phase": "Pending"}))  # a late event
    assert store.values()[0]["status"] == {"phase": "Running"}
    store.observe("MODIFIED", obj("a", 6, status={"phase": "Succeeded"}))
    assert store.values()[0]["status"] == {"phase": "Succeeded"}


def test_deleted_removes_and_a_listing_replaces() -> None:
    store = Store()
    store.observe(None, obj("a", 1))
    store.observe(None, obj("b", 2))
    store.observe("DELETED", obj("a", 3))
    assert [o["metadata"]["name"] for o in store.values()] == ["b"]
    store.replace_all([obj("c", 4)])
    assert [o["metadata"]["name"] for o in store.values()] == ["c"]


def test_a_job_deleted_by_the_controller_stays_counted_until_it_is_gone() -> None:
    store = Store()
    store.put(obj("job", 1))
    store.mark_deleting("ns", "job", "2026-01-01T00:00:00Z")
    assert store.values()[0]["metadata"]["deletionTimestamp"] == "2026-01-01T00:00:00Z"
    store.discard("ns", "job")
    assert store.values() == []
