"""One watch over the namespace's ExportRequests, shared by everything the API waits for.

Every waiter of the Kubernetes backend (``POST /export`` waiting for the file, the SSE stream,
a cancel waiting for Cancelled) sleeps on :class:`~exportd.store.events.RecordEvents`; this
module is what publishes to it. One list-then-watch loop per API process, like a client-go
informer: a waiter costs no connection of its own, and stopping the API ends exactly one
stream.

It also keeps what the API's admission needs without a list call per request: the unfinished
requests and who asked for each (the queue limits), and it reports every request that ended
(``on_finished``) so the API can settle its credit. A notification only says "look again":
after a reconnect every waiter is woken, so a change missed while disconnected is still seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
from kubernetes.aio.client import CustomObjectsApi
from kubernetes.aio.client.exceptions import ApiException

from exportd.contract import exportrequest as er
from exportd.contract.errors import TransientFailure
from exportd.contract.spec import Phase
from exportd.store.events import RecordEvents

log = logging.getLogger(__name__)
WATCH_SECONDS = 300
# The client gives up on a silent stream a little after the server should have ended it.
CLIENT_GRACE_SECONDS = 30
RETRY_SECONDS_MAX = 30.0
OnFinished = Callable[[str, str, Phase], Awaitable[None]]


class WatchGone(Exception):
    """The server no longer has the watched version (410): list again."""


@dataclass
class InFlight:
    """The unfinished requests, by name, with their requester."""

    requesters: dict[str, str] = field(default_factory=dict)

    def count(self, requester: str | None = None) -> int:
        if requester is None:
            return len(self.requesters)
        return sum(1 for who in self.requesters.values() if who == requester)


class ExportRequestWatch:
    """List, then watch, the namespace's ExportRequests until stopped; see the module doc."""

    def __init__(
        self,
        objects: Callable[[], CustomObjectsApi],
        namespace: str,
        events: RecordEvents,
        on_finished: OnFinished | None = None,
    ) -> None:
        self._objects = objects
        self.namespace = namespace
        self.events = events
        self.on_finished = on_finished
        self.in_flight = InFlight()
        self.synced = asyncio.Event()
        self._finished: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="exportd-exportrequest-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_synced(self, timeout: float) -> None:
        """Until the requests were listed (the counts are known); TransientFailure if the
        cluster did not answer in ``timeout``."""
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except TimeoutError:
            raise TransientFailure(
                "the export queue cannot be counted: the cluster is unavailable",
                reason="ClusterError",
            ) from None

    def submitted(self, name: str, requester: str) -> None:
        """Count a request just created, before its watch event arrives."""
        if name not in self._finished:
            self.in_flight.requesters[name] = requester

    async def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                version = await self._relist()
                delay = 1.0
                while True:
                    version = await self._follow(version)
            except WatchGone:
                log.info("exportrequest watch expired; listing again")
            except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.synced.clear()
                log.warning("exportrequest watch failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_SECONDS_MAX)

    async def _relist(self) -> str:
        listed = await self._objects().list_namespaced_custom_object(
            er.GROUP, er.VERSION, self.namespace, er.PLURAL
        )
        page = cast(dict[str, Any], listed)
        items: list[dict[str, Any]] = page.get("items") or []
        names = {er.metadata(item).get("name", "") for item in items}
        for gone in set(self.in_flight.requesters) - names:
            del self.in_flight.requesters[gone]
        self._finished &= names
        for item in items:
            await self.apply_event("ADDED", item)
        self.synced.set()
        self.events.publish_all()  # whatever changed while not watching: look again
        version: str = (page.get("metadata") or {}).get("resourceVersion", "")
        return version

    async def _follow(self, version: str) -> str:
        """Apply the events after ``version`` until the server ends the stream; the last
        version seen (to resume from)."""
        response = await self._objects().list_namespaced_custom_object_without_preload_content(
            er.GROUP,
            er.VERSION,
            self.namespace,
            er.PLURAL,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + CLIENT_GRACE_SECONDS,
        )
        try:
            async for line in response.content:
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise WatchGone(obj.get("message", ""))
                version = er.metadata(obj).get("resourceVersion", version)
                if kind != "BOOKMARK":
                    await self.apply_event(kind, obj)
        finally:
            response.release()
        return version

    async def apply_event(self, kind: str, body: Mapping[str, Any]) -> None:
        """One watch event (or listed item, as ADDED): count, settle once, wake waiters."""
        name = er.metadata(body).get("name", "")
        phase = er.status_of(body).phase or Phase.PENDING
        if kind == "DELETED" and not phase.is_terminal:
            phase = Phase.CANCELLED  # deleting an unfinished request cancels it
        if phase.is_terminal or kind == "DELETED":
            self.in_flight.requesters.pop(name, None)
        else:
            self.in_flight.requesters[name] = er.requester_of(body)
        if phase.is_terminal and name not in self._finished:
            self._finished.add(name)
            await self._report_finished(name, er.requester_of(body), phase)
        if kind == "DELETED":
            self._finished.discard(name)
        self.events.publish(name)

    async def _report_finished(self, name: str, requester: str, phase: Phase) -> None:
        if self.on_finished is None:
            return
        try:
            await self.on_finished(name, requester, phase)
        except Exception:
            # Settling is idempotent and is tried again on the next list (restart, expiry).
            self._finished.discard(name)
            log.exception("settling export %s (%s) failed", name, phase.value)
