"""How a new export gets in: the order of checks of the create routes, and their answers.

For ``POST /export`` and ``POST /v1/exports``, after the bearer check (401), the rate limit
(429), the body limit (413) and body validation (422, all before this module runs):

1. delivery and variables against settings and the catalog (422);
2. one state-store transaction (:meth:`StateStore.admit`): the ``Idempotency-Key`` claim (replay,
   409, 422), the queue limits (503 + ``Retry-After``), the credit debit (402 + the next credit
   time) and, in embedded mode, the export's record;
3. the backend starts the export (a failure here gives the credit back and frees the key);
4. the route's answer, stored under the idempotency key for replays.

Refusals at step 2 raise; the handlers installed here turn them into problem+json with the
headers a client needs to retry well. The OpenAPI document is completed here too: every route
behind the bearer check declares 401 and 429, every route with a body 413, the create routes
402, 409 and 503, all as problem+json.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from starlette.responses import JSONResponse, Response

from exportd.api.backends.base import ExportBackend
from exportd.api.context import ApiContext
from exportd.api.idempotency import canonical_body, replayed, stored_response
from exportd.api.models import AcceptedResponse, Problem
from exportd.api.openapi_problems import document_problems
from exportd.api.problems import ProblemResponse, problem_response, retry_later_response
from exportd.api.ratelimit import RateLimiter
from exportd.api.recipients import RecipientPolicy, install_recipient_errors
from exportd.contract.errors import ExportdError, InvalidInput
from exportd.contract.spec import (
    ExportRequestBody,
    ExportSpec,
    Phase,
    ReturnType,
    new_export_id,
    utc_now,
)
from exportd.security.credits import (
    CreditAccount,
    CreditPolicy,
    InsufficientCredits,
    next_credit_at,
)
from exportd.security.tokens import Principal
from exportd.settings import ApiSettings
from exportd.store.admission import (
    Admission,
    KeyInProgress,
    QueueFull,
    QueueLimits,
    StoredResponse,
    export_id_for_key,
    request_hash,
)
from exportd.store.base import (
    Clock,
    ExportRecord,
    StateStore,
    StateUnavailable,
    store_from_settings,
)

log = logging.getLogger(__name__)
STATE_RETRY_AFTER_SECONDS = 1
KEY_RETRY_FIRST_SECONDS = 0.5
KEY_RETRY_CAP_SECONDS = 30.0
KEY_RETRY_ATTEMPTS = 40  # about 20 minutes in all
KEY_IN_PROGRESS_RETRY_AFTER_SECONDS = 1
Respond = Callable[[ExportSpec], Awaitable[Response]]
_BODY_FIELDS = set(ExportRequestBody.model_fields)


@dataclass
class Protection:
    settings: ApiSettings
    store: StateStore
    owns_store: bool
    credits: CreditPolicy
    clock: Clock
    limiter: RateLimiter | None
    recipients: RecipientPolicy
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def build(
        cls, settings: ApiSettings, backend: ExportBackend, clock: Clock | None = None
    ) -> Protection:
        store = backend.record_store
        owns_store = store is None
        protection = cls(
            settings=settings,
            store=store or store_from_settings(settings, clock=clock),
            owns_store=owns_store,
            credits=CreditPolicy.from_settings(settings),
            clock=clock or utc_now,
            limiter=RateLimiter(settings) if settings.rate_limits_enabled else None,
            recipients=RecipientPolicy.from_settings(settings),
        )
        backend.settle_with(protection.settle)
        return protection

    async def start(self) -> None:
        if self.owns_store:  # otherwise the backend opened it
            await self.store.open()

    async def settle(self, export_id: str, requester: str, phase: Phase) -> None:
        """An export ended outside the store (Kubernetes mode): give its credit back when the
        policy says so. Once per export however often it is called (the ledger's key)."""
        if self.credits.refunds(phase) and await self.store.refund(export_id):
            log.info("export %s of %s %s: credit refunded", export_id, requester, phase.value)

    async def stop(self) -> None:
        if self.owns_store:
            await self.store.close()

    def admin_or(self, principal: Principal) -> str | None:
        """The owner a caller may see: its own, or everyone's (``None``) with the admin scope."""
        return None if principal.has_scope(self.settings.jwt_admin_scope) else principal.sub

    async def account(self, owner: str) -> tuple[CreditAccount, datetime]:
        now = self.clock()
        return await self.store.credit_account(owner, self.credits, now), now

    def next_credit_at(self, account: CreditAccount, now: datetime) -> datetime | None:
        return next_credit_at(account, self.credits, now)

    async def create(
        self,
        context: ApiContext,
        body: ExportRequestBody,
        principal: Principal,
        key: str | None,
        route: str,
        respond: Respond,
    ) -> Response:
        """Admit, start and answer one new export (see the module docstring for the order)."""
        context.check_request(body)
        owner, now = principal.sub, self.clock()
        emailed = body.return_type is ReturnType.EMAIL and body.email is not None
        if emailed:
            self.recipients.check(principal, str(body.email))  # 403
            await self.recipients.check_cap(owner)  # 429
        export_id = export_id_for_key(owner, key) if key else new_export_id()
        spec = ExportSpec.from_request(body, requested_by=owner, export_id=export_id)
        in_flight = await context.backend.in_flight(owner)
        admission = self._admission(spec, key, route, body, now, in_flight)
        admitted = await self.store.admit(admission)
        if admitted.replay is not None:
            return replayed(admitted.replay)
        if admission.record is not None:  # the committed record is the queue entry
            context.backend.start_admitted(spec)
        else:
            try:
                await context.backend.submit(spec)
            except BaseException:
                await self._abandon(spec, key)
                raise
        if emailed:
            await self.recipients.count(owner)  # never raises: a lost count is logged
        # From here the export is charged and will run: every outcome is an answer to keep.
        response = await self._answer(context, spec, route, respond)
        if key is not None:
            await self._complete_key(owner, key, stored_response(response))
        return response

    async def _complete_key(self, owner: str, key: str, response: StoredResponse) -> None:
        """Store the answer for replays. The export exists whatever happens here, so a state
        store that fails now is retried in the background (meanwhile a retry of the request
        gets 409 naming the export) instead of turning a 202 into an error."""
        try:
            await self.store.complete_key(owner, key, response)
        except StateUnavailable:
            task = asyncio.create_task(self._complete_key_later(owner, key, response))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _complete_key_later(self, owner: str, key: str, response: StoredResponse) -> None:
        delay = KEY_RETRY_FIRST_SECONDS
        for _ in range(KEY_RETRY_ATTEMPTS):
            await asyncio.sleep(delay)
            try:
                await self.store.complete_key(owner, key, response)
                return
            except StateUnavailable:
                delay = min(delay * 2, KEY_RETRY_CAP_SECONDS)
        log.error("could not store the answer of idempotency key %r of %s", key, owner)

    async def start_scheduled(self, context: ApiContext, spec: ExportSpec) -> None:
        """Admit and start a schedule's run like any export of its owner (checked against the
        catalog, charged, queue-limited); it raises as :meth:`create` refuses. A run id that
        exists already raises ``Conflict`` and starts nothing (the slot was run before)."""
        body = ExportRequestBody.model_validate(spec.model_dump(include=_BODY_FIELDS))
        context.check_request(body)
        in_flight = await context.backend.in_flight(spec.requested_by)
        admission = self._admission(spec, None, "/v1/schedules", body, self.clock(), in_flight)
        await self.store.admit(admission)
        if admission.record is not None:  # the committed record is the queue entry
            context.backend.start_admitted(spec)
            return
        try:
            await context.backend.submit(spec)
        except BaseException:
            await self._abandon(spec, None)
            raise

    def _admission(
        self,
        spec: ExportSpec,
        key: str | None,
        route: str,
        body: ExportRequestBody,
        now: datetime,
        in_flight: tuple[int, int] | None,
    ) -> Admission:
        keeps_records = not self.owns_store
        return Admission(
            owner=spec.requested_by,
            export_id=spec.id,
            now=now,
            record=ExportRecord.new(spec) if keeps_records else None,
            credits=self.credits,
            queue=self._queue_limits(),
            in_flight=in_flight,
            key=key,
            request_hash=request_hash("POST", route, canonical_body(body)) if key else None,
            key_expires_at=now + timedelta(seconds=self.settings.idempotency_ttl_seconds),
        )

    def _queue_limits(self) -> QueueLimits:
        s = self.settings
        return QueueLimits(
            per_user=s.max_running_per_user + s.max_queued_per_user,
            total=s.max_running_exports + s.max_queued_exports,
        )

    async def _abandon(self, spec: ExportSpec, key: str | None) -> None:
        """The backend could not take the export: its credit comes back, its key is free."""
        log.warning("export %s could not be started; credit refunded", spec.id)
        await self.store.refund(spec.id)
        if key is not None:
            await self.store.release_key(spec.requested_by, key)

    async def _answer(
        self, context: ApiContext, spec: ExportSpec, route: str, respond: Respond
    ) -> Response:
        """The route's answer; once the export exists every outcome is an answer to keep."""
        try:
            return await respond(spec)
        except StateUnavailable:
            log.warning("state store unavailable answering export %s; answering 202", spec.id)
            accepted = AcceptedResponse(id=spec.id, status_url=context.status_url(spec.id))
            return JSONResponse(accepted.to_json_dict(), status_code=202)
        except ExportdError as exc:
            errors = exc.errors if isinstance(exc, InvalidInput) else []
            return problem_response(
                exc.status, exc.message, reason=exc.reason, errors=errors, instance=route
            )
        except Exception:
            log.exception("answering export %s failed; answering 202", spec.id)
            accepted = AcceptedResponse(id=spec.id, status_url=context.status_url(spec.id))
            return JSONResponse(accepted.to_json_dict(), status_code=202)


def _retry_seconds(later: datetime, now: datetime) -> int:
    return max(1, math.ceil((later - now).total_seconds()))


async def _on_insufficient_credits(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InsufficientCredits)
    protection = get_protection(request)
    headers = {}
    if exc.next_credit_at is not None:
        headers["Retry-After"] = str(_retry_seconds(exc.next_credit_at, protection.clock()))
    problem = Problem(
        type=f"urn:exportd:problem:{exc.reason}",
        title="Payment Required",
        status=402,
        detail=exc.message,
        instance=request.url.path,
        reason=exc.reason,
        next_credit_at=exc.next_credit_at,
    )
    return ProblemResponse(problem.to_json_dict(), status_code=402, headers=headers)


async def _on_queue_full(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QueueFull)
    retry = get_protection(request).settings.queue_full_retry_after_seconds
    return retry_later_response(request, exc, retry)


async def _on_state_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StateUnavailable)
    return retry_later_response(request, exc, STATE_RETRY_AFTER_SECONDS)


async def _on_key_in_progress(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeyInProgress)
    retry = KEY_IN_PROGRESS_RETRY_AFTER_SECONDS
    return retry_later_response(request, exc, retry, export_id=exc.export_id)


def install_protection(app: FastAPI, protection: Protection) -> None:
    """Make ``protection`` reachable by routes, and install its error answers and documents."""
    app.state.protection = protection
    app.add_exception_handler(InsufficientCredits, _on_insufficient_credits)
    app.add_exception_handler(QueueFull, _on_queue_full)
    install_recipient_errors(app)
    app.add_exception_handler(StateUnavailable, _on_state_unavailable)
    app.add_exception_handler(KeyInProgress, _on_key_in_progress)
    document_problems(app)


def get_protection(request: Request) -> Protection:
    protection: Protection = request.app.state.protection
    return protection


async def _protection_dep(request: Request) -> Protection:
    return get_protection(request)  # async: FastAPI runs a plain def in its threadpool


ProtectionDep = Annotated[Protection, Depends(_protection_dep)]
