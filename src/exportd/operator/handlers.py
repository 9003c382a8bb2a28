"""kopf handlers: thin triggers around the controller, and kopf's settings pinned with reasons.

The handlers decide nothing themselves: they wake or wait for a reconcile round
(:mod:`exportd.operator.controller`) and translate its failures into kopf's errors. Every
handler that kopf retries has a timeout and a retry limit; none retries forever. Deleting a
request deletes its Job explicitly, in a handler kopf guards with a finalizer: garbage collection
by owner reference would do it on a real cluster, but the operator does not count on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf
from kubernetes.aio.client import ApiClient

from exportd.contract import exportrequest as er
from exportd.contract.catalog import Catalog
from exportd.contract.spec import TERMINAL_PHASES, utc_now
from exportd.operator.admission import Limits
from exportd.operator.cache import ClusterCache
from exportd.operator.connection import Cluster
from exportd.operator.controller import Controller, RoundFailed
from exportd.operator.housekeeping import register_operations
from exportd.operator.jobs import MANAGED_BY, JobTemplate, RequestRef, job_name
from exportd.operator.kube import KubeApi, KubeError
from exportd.operator.reconcile import Linker, OrderProblem, RoundContext, check_order
from exportd.operator.schedules import register_schedules
from exportd.settings import OperatorSettings
from exportd.storage import storage_from_settings

log = logging.getLogger(__name__)
KopfTuning = Callable[[kopf.OperatorSettings], None]
RETRY_DELAY_SECONDS = 3.0


def pin_kopf_settings(kopf_settings: kopf.OperatorSettings) -> None:
    """kopf's settings that the operator's correctness or operability depends on."""
    # One replica with a Recreate strategy: peering would freeze two replicas of equal
    # priority and needs peering objects; standalone needs neither.
    kopf_settings.peering.standalone = True
    # The finalizer and handler progress live under our own group: kubectl shows whose they
    # are, and another kopf operator on the cluster never takes them for its own. Progress goes
    # to annotations because the structural schema prunes unknown status fields.
    kopf_settings.persistence.finalizer = f"{er.GROUP}/finalizer"
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=er.GROUP, v1=False
    )
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=er.GROUP, v1=False
    )
    # The apiserver ends each watch after a random 30-60 min; asking for 5 min makes reconnects
    # regular, the client waits a little longer so the server closes first, and a stream that
    # is silent (no event, no 60-s bookmark) for 90 s is presumed dead and reopened.
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.connect_timeout = 30
    kopf_settings.watching.inactivity_timeout = 90
    # Only the operator's own Jobs are watched, filtered by the apiserver: the cluster's other
    # Jobs (possibly many) never reach it.
    kopf_settings.watching.label_selectors["batch", "v1", "jobs"] = (
        f"{er.LABEL_MANAGED_BY}={MANAGED_BY}"
    )
    # Other API calls give up after a minute rather than aiohttp's five.
    kopf_settings.networking.request_timeout = 60
    kopf_settings.networking.connect_timeout = 10
    # Kubernetes Events on requests for handler warnings and errors only, not every success.
    kopf_settings.posting.level = logging.WARNING


@dataclass
class Runtime:
    """What the handlers share; built at startup, inside the operator's event loop."""

    settings: OperatorSettings
    cluster: Cluster
    client: ApiClient | None = None
    api: KubeApi | None = None
    controller: Controller | None = None
    cache: ClusterCache = field(default_factory=ClusterCache)  # fed by the watch events below
    loop_task: asyncio.Task[None] | None = None

    def context_factory(self) -> Callable[[], RoundContext]:
        catalog = Catalog.load(self.settings.resolved_catalog_path)
        template = JobTemplate.from_settings(self.settings)
        limits = Limits(self.settings.max_running_jobs, self.settings.max_running_per_requester)
        link = self.linker()
        secret = self.settings.resolved_report_secret()
        return lambda: RoundContext(utc_now(), limits, template, catalog, link, secret)

    def linker(self) -> Linker:
        storage = storage_from_settings(self.settings)
        expiry = self.settings.link_expiry_seconds

        def link(key: str, download_name: str) -> tuple[str, int]:
            return storage.signed_url(key, expires_in=expiry, download_name=download_name)

        return link


def _not_terminal(status: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") not in TERMINAL_PHASES


def register(
    registry: kopf.OperatorRegistry,
    settings: OperatorSettings,
    cluster: Cluster,
    *,
    tuning: KopfTuning | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Runtime:
    """Register the operator's handlers on ``registry``; ``tuning`` adjusts kopf's settings
    after they are pinned (tests make kopf quicker); ``clock`` tells schedules the time."""
    runtime = Runtime(settings, cluster)
    resource = (er.GROUP, er.VERSION, er.PLURAL)

    # Startup and login give up after a few tries: an operator that cannot reach its cluster
    # should exit (and be restarted visibly), not wait forever.
    @kopf.on.login(registry=registry, id="login", retries=5, backoff=3, timeout=60)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        return await cluster.connection_info()

    @kopf.on.startup(registry=registry, id="start", retries=5, backoff=3, timeout=120)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        pin_kopf_settings(settings)
        if tuning is not None:
            tuning(settings)
        if runtime.settings.webhook_cert_path is not None:
            # Serves the validate handler below; the ValidatingWebhookConfiguration that
            # points the apiserver at it (and its CA bundle) is the chart's.
            settings.admission.server = kopf.WebhookServer(
                addr="0.0.0.0",  # noqa: S104 - the apiserver reaches it through a Service
                port=runtime.settings.webhook_port,
                certfile=str(runtime.settings.webhook_cert_path),
                pkeyfile=str(runtime.settings.webhook_key_path or ""),
            )
        runtime.client = ApiClient(await cluster.configuration())
        runtime.api = KubeApi(runtime.client, runtime.settings.namespace)
        runtime.controller = Controller(runtime.api, runtime.context_factory(), runtime.cache)
        runtime.loop_task = asyncio.create_task(
            runtime.controller.run(runtime.settings.resync_seconds), name="exportd-reconcile"
        )

    @kopf.on.cleanup(registry=registry, id="stop", retries=1, timeout=30)
    async def stop(**_: Any) -> None:
        if runtime.loop_task is not None:
            runtime.loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runtime.loop_task
        if runtime.client is not None:
            await runtime.client.close()  # type: ignore[no-untyped-call]

    # kopf answers /healthz with 500 when a probe fails: a stalled reconcile loop (a round
    # hanging on the API, or failing for longer than the limit) or a dead one gets the pod
    # restarted, instead of an operator that looks alive and does nothing.
    @kopf.on.probe(registry=registry, id="secondsSinceReconcile", retries=1)
    def probe(**_: Any) -> float | None:
        controller = runtime.controller
        if controller is None:
            return None  # starting
        if runtime.loop_task is not None and runtime.loop_task.done():
            raise kopf.PermanentError("the reconcile loop has stopped")
        age = controller.seconds_since_success()
        if age > runtime.settings.liveness_stall_seconds:
            raise kopf.PermanentError(f"no reconcile round has finished for {age:.0f} s")
        return round(age, 1)

    # Explicit ids: kopf keeps handler progress under them (exportd.dev/<id> annotations), so
    # they must not change when the code moves.
    retried: dict[str, Any] = {"registry": registry, "timeout": 600, "retries": 20, "backoff": 3}

    @kopf.on.create(*resource, id="admit", **retried)
    @kopf.on.resume(*resource, id="resume", when=_not_terminal, **retried)
    @kopf.on.update(*resource, id="cancel", field="spec.cancel", **retried)
    async def reconcile(**_: Any) -> None:
        """Admit, queue, or cancel: whatever a round decides for this request (and others)."""
        assert runtime.controller is not None
        await _round_or_retry(runtime.controller)

    @kopf.on.delete(*resource, id="delete-job", **retried)
    async def delete_job(namespace: str | None, name: str, uid: str, **_: Any) -> None:
        assert runtime.api is not None and runtime.controller is not None
        assert namespace is not None  # ExportRequests are namespaced
        job = job_name(RequestRef(namespace, name, uid))
        try:
            await runtime.api.delete_job(namespace, job)
        except KubeError as exc:
            if exc.transient:
                raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS) from exc
            raise kopf.PermanentError(str(exc)) from exc
        runtime.controller.poke()  # its slot is free

    @kopf.on.event(*resource, registry=registry, id="request-changed")
    def request_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        runtime.cache.requests.observe(type, copy.deepcopy(dict(body)))
        if runtime.controller is not None:
            runtime.controller.poke()  # progress to mirror, or a request gone

    managed = {er.LABEL_MANAGED_BY: MANAGED_BY}

    @kopf.on.event("batch", "v1", "jobs", registry=registry, id="job-changed", labels=managed)
    def job_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        runtime.cache.jobs.observe(type, copy.deepcopy(dict(body)))
        if runtime.controller is not None:
            runtime.controller.poke()  # a Job started, failed, or finished

    if settings.webhook_cert_path is not None:
        register_webhook(registry, settings)
    register_operations(registry, settings, runtime)  # metrics, housekeeping timer
    register_schedules(registry, settings, runtime, clock)  # ExportSchedules (tests pass a clock)
    return runtime


def register_webhook(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Apply-time validation: ``kubectl apply`` or an Argo CD sync of a request whose type or
    variables the catalog rejects fails at once, with the message the request would otherwise
    fail with later (the same check, :func:`~exportd.operator.reconcile.check_order`)."""
    catalog = Catalog.load(settings.resolved_catalog_path)

    @kopf.on.validate(
        er.GROUP,
        er.VERSION,
        er.PLURAL,
        registry=registry,
        id="validate-request",
        operations=["CREATE"],
    )
    def validate(body: kopf.Body, **_: Any) -> None:
        problem = check_order(body, catalog)
        if isinstance(problem, OrderProblem):
            raise kopf.AdmissionError(f"{problem.reason}: {problem.message}", code=422)


async def _round_or_retry(controller: Controller) -> None:
    """A failed round is retried (within the handler's limits) even when the failure was
    permanent: it may have been another request's, and this request still needs a round."""
    try:
        await controller.reconcile()
    except (RoundFailed, KubeError) as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS) from exc
