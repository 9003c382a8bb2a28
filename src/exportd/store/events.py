"""In-process change notifications for export records.

Whoever writes a record (the local runner, a Kubernetes watch) publishes its id; whoever waits
for an export (``POST /export``) subscribes and sleeps on an :class:`asyncio.Event` instead of
polling the store. A notification only says "look again": waiters re-read the store, so a missed
or repeated notification is harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class RecordEvents:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def publish(self, export_id: str) -> None:
        for event in self._waiters.get(export_id, ()):
            event.set()

    def publish_all(self) -> None:
        """Wake every waiter (e.g. after a reconnect, when changes may have been missed)."""
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    @contextmanager
    def subscribe(self, export_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(export_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(export_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[export_id]

    def waiting(self, export_id: str) -> int:
        return len(self._waiters.get(export_id, ()))
