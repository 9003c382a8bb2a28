"""Runs reconcile rounds: one at a time, shared by everyone who asked, and periodically anyway.

kopf handlers and the background loop ask for a round; a round that starts after a request
answers it, so a burst of events (an operator resuming a thousand requests) costs a few rounds,
not a thousand. Rounds never overlap, which is what keeps admission exact: the Jobs a round
creates are in the next round's view. A round reads the watch-fed cache
(:mod:`exportd.operator.cache`), not a listing: it costs the same few calls with a thousand
finished requests as with ten. A failed call fails the round for whoever waits on it
(kopf handlers retry); the background loop backs off and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from exportd.contract import exportrequest as er
from exportd.contract.spec import utc_now
from exportd.operator.cache import ClusterCache
from exportd.operator.events import NORMAL, WARNING, EventNote, InvolvedObject, event_body
from exportd.operator.jobs import JobOutcome, job_state
from exportd.operator.kube import AlreadyExists, KubeApi, KubeError
from exportd.operator.reconcile import (
    TERMINAL_VALUES,
    JobCreation,
    RoundContext,
    RoundPlan,
    StatusPatch,
    plan_round,
    rejected_patch,
)

log = logging.getLogger(__name__)
BACKOFF_MAX_SECONDS = 60.0
# A full listing now and then, in case a deletion fell into a gap between two watch streams
# (a re-opened watch lists what exists, but cannot report what vanished meanwhile).
RELIST_SECONDS = 600.0


class RoundFailed(Exception):
    """Some calls of a round failed; ``transient`` when retrying may help."""

    def __init__(self, errors: list[KubeError]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.transient = all(error.transient for error in errors)


class Controller:
    def __init__(
        self, api: KubeApi, context: Callable[[], RoundContext], cache: ClusterCache | None = None
    ) -> None:
        self.api = api
        self.context = context
        self.cache = cache if cache is not None else ClusterCache()
        self.last_success: float | None = None  # monotonic time of the last clean round
        self.started = time.monotonic()
        self._primed_at = self.started
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._started = 0
        self._finished = 0
        self._last_error: BaseException | None = None
        self._wake.set()  # a first round at start: a settled cluster is checked at once

    def seconds_since_success(self) -> float:
        """Since the last clean round (or the start, before the first one)."""
        return time.monotonic() - (self.last_success or self.started)

    def poke(self) -> None:
        """Ask the background loop for a round soon (from event handlers; never waits)."""
        self._wake.set()

    async def reconcile(self) -> None:
        """Return once a round that started after this call has finished; raise its error."""
        wanted = self._started + 1
        async with self._lock:
            if self._finished < wanted:
                await self._round()  # raises when it fails
                return
        if self._last_error is not None:
            raise self._last_error

    async def run(self, resync_seconds: float) -> None:
        """The background loop: a round on every poke, and every ``resync_seconds`` anyway."""
        delay = resync_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            try:
                await self.reconcile()
            except (RoundFailed, KubeError) as exc:
                delay = min(max(delay * 2, 1.0), BACKOFF_MAX_SECONDS)
                log.warning("reconcile round failed (next try in %.0f s): %s", delay, exc)
            else:
                delay = resync_seconds

    async def _round(self) -> None:
        self._started += 1
        try:
            if not self.cache.primed or time.monotonic() - self._primed_at > RELIST_SECONDS:
                await self._prime()
            jobs = self.cache.jobs.values()
            requests = await self._with_results(self.cache.requests.values(), jobs)
            plan = plan_round(requests, jobs, self.context())
            await self._execute(plan)
        except (RoundFailed, KubeError) as exc:
            self._last_error = exc
            raise
        else:
            self._last_error = None
            self.last_success = time.monotonic()
        finally:
            self._finished = self._started

    async def _prime(self) -> None:
        """The one full listing, at start: the watch keeps the cache current from then on."""
        self.cache.jobs.replace_all(await self.api.list_jobs())  # before requests, see below
        self.cache.requests.replace_all(await self.api.list_requests())
        self.cache.primed = True
        self._primed_at = time.monotonic()

    async def _with_results(
        self, requests: list[dict[str, Any]], jobs: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """A Job seen complete whose request shows no result yet: the request's own watch event
        may simply be behind the Job's. Read that request (rare: once per finished export) so
        a round never fails an export for a result it has not seen yet."""
        complete = {
            state.owner_uid
            for state in map(job_state, jobs)
            if state.outcome is JobOutcome.COMPLETE and state.owner_uid
        }
        fresh = []
        for body in requests:
            meta, status = body.get("metadata") or {}, body.get("status") or {}
            if (
                meta.get("uid") in complete
                and not status.get("result")
                and status.get("phase") not in TERMINAL_VALUES
            ):
                current = await self.api.get_request(meta.get("namespace", ""), meta["name"])
                if current is None:
                    continue
                self.cache.requests.put(current)
                body = current
            fresh.append(body)
        return fresh

    async def _execute(self, plan: RoundPlan) -> None:
        errors: list[KubeError] = []
        for involved, note in plan.refused:
            # Named after the report, so each forged report is logged and posted once.
            if await self._post_event(involved, note):
                log.error("%s/%s: %s", involved.namespace, involved.name, note.message)
        for namespace, name in plan.delete:
            await self._attempt(errors, self._delete_job(namespace, name))
        for creation in plan.create:
            await self._attempt(errors, self._create_job(creation))
        for patch in plan.patch:
            await self._attempt(errors, self._patch(patch))
        if errors:
            raise RoundFailed(errors)

    @staticmethod
    async def _attempt(errors: list[KubeError], call: Awaitable[object]) -> None:
        try:
            await call
        except KubeError as exc:
            errors.append(exc)

    async def _patch(self, patch: StatusPatch) -> None:
        """Write a status patch, then post the events it means (never before: a patch that
        fails is planned again, and its events with it)."""
        written = await self.api.patch_request_status(patch.namespace, patch.name, patch.body())
        if written is not None:
            self.cache.requests.put(written)  # in the next round even before its watch event
            for note in patch.events:
                await self._post_event(patch.involved, note)

    async def _post_event(self, involved: InvolvedObject, note: EventNote) -> bool:
        """Events are for people: one that cannot be posted is logged, the round goes on.
        True when this call posted it (False: posted before, or not at all)."""
        try:
            return await self.api.create_event(event_body(involved, note, utc_now()))
        except KubeError as exc:
            log.warning("event %s on %s not posted: %s", note.reason, involved.name, exc)
            return False

    async def _delete_job(self, namespace: str, name: str) -> None:
        if await self.api.delete_job(namespace, name):
            log.info("deleted Job %s/%s", namespace, name)
            self.cache.jobs.mark_deleting(namespace, name, er.rfc3339(utc_now()))
        else:
            self.cache.jobs.discard(namespace, name)  # already gone

    async def _create_job(self, creation: JobCreation) -> None:
        manifest = creation.manifest
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            self.cache.jobs.put(await self.api.create_job(manifest))  # admission counts it now
            log.info("created Job %s/%s for %s", namespace, name, creation.request.name)
            created = EventNote(NORMAL, "JobCreated", f"created Job {name}")
            await self._post_event(creation.on_created.involved, created)
        except AlreadyExists:
            if not await self._ours(namespace, name, creation.request.uid):
                await self._reject(creation, "JobNameConflict", f"Job {name} belongs to another")
                return
            log.info("Job %s/%s already exists (created before a restart)", namespace, name)
        except KubeError as exc:
            # 403 is a refusal here (a ResourceQuota, an admission webhook, a policy), not the
            # RBAC race it may be elsewhere: the request fails with the apiserver's words.
            if exc.transient and exc.status != 403:
                raise
            await self._reject(creation, "JobRejected", str(exc))
            return
        if creation.on_created.status:
            await self._patch(creation.on_created)

    async def _ours(self, namespace: str, name: str, uid: str) -> bool:
        existing = await self.api.get_job(namespace, name)
        owners = ((existing or {}).get("metadata") or {}).get("ownerReferences") or []
        return any(owner.get("uid") == uid for owner in owners)

    async def _reject(self, creation: JobCreation, reason: str, message: str) -> None:
        log.error("cannot create the Job of %s: %s", creation.request.name, message)
        assert creation.view is not None
        patch = rejected_patch(creation.view, reason, message, utc_now())
        await self._post_event(patch.involved, EventNote(WARNING, reason, message))
        await self._patch(patch)
