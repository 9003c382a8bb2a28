"""What the operator knows of its ExportRequests and Jobs: a store fed by kopf's watch events.

A reconcile round reads this store instead of listing both resources: with thousands of
finished requests a round costs the same few calls as with ten (the figures are in
docs/gitops.md, "Reconcile cost"). It is filled once by a full list when the controller
starts, then kept current by the watch events kopf delivers (``observe``), and written through
by the controller itself: a Job it created or a status it patched is in the next round even if
the watch has not delivered it yet, which keeps admission exact.

An object is replaced only by a newer version (a larger ``resourceVersion``, compared as a
number when both are numbers, as etcd revisions are), so a late watch event never takes back
what the controller wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]  # (namespace, name)


def _key(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    if current is None:
        return True
    new = str((candidate.get("metadata") or {}).get("resourceVersion") or "")
    old = str((current.get("metadata") or {}).get("resourceVersion") or "")
    if new.isdigit() and old.isdigit():
        return int(new) >= int(old)
    return True


@dataclass
class Store:
    """One resource's objects by (namespace, name)."""

    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)

    def put(self, body: Mapping[str, Any]) -> None:
        key = _key(body)
        if _newer(body, self.objects.get(key)):
            self.objects[key] = dict(body)

    def remove(self, body: Mapping[str, Any]) -> None:
        key = _key(body)
        current = self.objects.get(key)
        if current is not None and _newer(body, current):
            del self.objects[key]

    def discard(self, namespace: str, name: str) -> None:
        self.objects.pop((namespace, name), None)

    def mark_deleting(self, namespace: str, name: str, stamp: str) -> None:
        """Deleted by us: it still counts (its pod stops) until the watch says it is gone."""
        current = self.objects.get((namespace, name))
        if current is not None:
            meta = dict(current.get("metadata") or {})
            meta.setdefault("deletionTimestamp", stamp)
            self.objects[(namespace, name)] = {**current, "metadata": meta}

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event (kopf's ``type``: None for the initial listing)."""
        if event_type == "DELETED":
            self.remove(body)
        else:
            self.put(body)

    def replace_all(self, bodies: list[dict[str, Any]]) -> None:
        """A full listing: what it holds, merged with anything newer seen meanwhile."""
        listed = {_key(body): body for body in bodies}
        for key in list(self.objects):
            if key not in listed:
                del self.objects[key]
        for body in bodies:
            self.put(body)

    def values(self) -> list[dict[str, Any]]:
        return list(self.objects.values())


@dataclass
class ClusterCache:
    requests: Store = field(default_factory=Store)
    jobs: Store = field(default_factory=Store)
    primed: bool = False
