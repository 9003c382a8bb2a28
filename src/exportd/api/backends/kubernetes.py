"""Kubernetes backend: each export is an ExportRequest custom resource; the operator runs it.

The API never talks to the operator: it creates the CR (named by the export id, so a repeated
order with the same id finds the first one), reads its status for ``get``, lists the caller's
CRs by the requester label, cancels by setting ``spec.cancel``, and waits for a terminal phase
on the one watch of :mod:`exportd.api.backends.kube_watch` (no loop of sleeps, no connection per
waiter), which also counts the unfinished requests for the queue limits and reports the ended
ones so their credit can be settled. The CR layout lives in :mod:`exportd.contract.exportrequest`.

The service account needs ``create``, ``get``, ``list``, ``watch`` and ``patch`` on
``exportrequests`` in ``EXPORTD_KUBERNETES_NAMESPACE``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import aiohttp
from kubernetes.aio.client import ApiClient, Configuration, CustomObjectsApi
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import ConfigException, load_incluster_config, load_kube_config

from exportd.api.backends.base import (
    LIST_LIMIT_DEFAULT,
    ExportBackend,
    ExportView,
    ExportViewPage,
    Settle,
)
from exportd.api.backends.kube_watch import ExportRequestWatch
from exportd.contract import exportrequest as er
from exportd.contract.catalog import Catalog
from exportd.contract.errors import (
    Conflict,
    ExportdError,
    FieldError,
    InvalidInput,
    NotFound,
    TransientFailure,
)
from exportd.contract.spec import ExportSpec, ExportStatus, Phase
from exportd.settings import ApiSettings
from exportd.store.events import RecordEvents

log = logging.getLogger(__name__)
T = TypeVar("T")
CREATED_BY = er.API_MANAGER
CANCEL_WAIT_MIN_SECONDS = 30.0
SYNC_WAIT_SECONDS = 10.0  # for the first list of requests, before counting the queue


def _translate(exc: BaseException, what: str) -> ExportdError:
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status == 404:
            return NotFound(f"{what}: not found", reason="ExportNotFound")
        if status == 409:
            return Conflict(f"{what}: conflict", reason="Conflict")
        if status == 422:
            return InvalidInput(f"{what}: rejected by the cluster: {exc.body}", reason="Invalid")
    return TransientFailure(f"{what}: the cluster is unavailable: {exc}", reason="ClusterError")


async def _call(what: str, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise _translate(exc, what) from exc


async def load_configuration() -> Configuration:
    """In a pod its service account; elsewhere the kubeconfig."""
    config = Configuration()
    try:
        load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    except ConfigException:
        await load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
    return config


def _same_order(a: ExportSpec, b: ExportSpec) -> bool:
    """Equal orders, whenever they were placed (a retried request has a new time)."""
    ignored = {"requested_at", "cancel"}
    return a.model_dump(exclude=ignored) == b.model_dump(exclude=ignored)


def _view(body: Mapping[str, Any]) -> ExportView:
    created = er.parse_time(er.metadata(body).get("creationTimestamp"))
    return ExportView(
        spec=er.export_spec_from_body(body),
        status=er.export_status_from_body(body),
        created_at=created or datetime.now(UTC),
    )


def _newest_first(view: ExportView) -> tuple[datetime, str]:
    return (view.spec.requested_at, view.id)


def _encode_cursor(view: ExportView) -> str:
    raw = json.dumps([view.spec.requested_at.isoformat(), view.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, name = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(stamp), str(name)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidInput(
            "invalid cursor", errors=[FieldError("cursor", "not a cursor from this API")]
        ) from exc


class KubernetesBackend(ExportBackend):
    def __init__(
        self,
        settings: ApiSettings,
        catalog: Catalog,
        *,
        configuration: Configuration | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.namespace = settings.kubernetes_namespace
        self.configuration = configuration
        self.events = RecordEvents()
        self._client: ApiClient | None = None
        self._settle: Settle | None = None
        self._watch = ExportRequestWatch(
            lambda: self.objects, self.namespace, self.events, on_finished=self._finished
        )

    @property
    def objects(self) -> CustomObjectsApi:
        if self._client is None:
            raise TransientFailure("the Kubernetes backend is not started", reason="NotStarted")
        return CustomObjectsApi(self._client)

    async def start(self) -> None:
        configuration = self.configuration or await load_configuration()
        self._client = ApiClient(configuration)
        self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None

    async def ready(self) -> bool:
        try:
            await self._list(limit=1)
        except ExportdError:
            return False
        return True

    def settle_with(self, settle: Settle) -> None:
        self._settle = settle

    async def _finished(self, export_id: str, requester: str, phase: Phase) -> None:
        if self._settle is not None:
            await self._settle(export_id, requester, phase)

    async def in_flight(self, owner: str) -> tuple[int, int]:
        await self._watch.wait_synced(SYNC_WAIT_SECONDS)
        counts = self._watch.in_flight
        return counts.count(owner), counts.count()

    # ---- calls -----------------------------------------------------------------------------

    async def _read(self, name: str) -> dict[str, Any]:
        body = await _call(
            f"export {name}",
            lambda: self.objects.get_namespaced_custom_object(
                er.GROUP, er.VERSION, self.namespace, er.PLURAL, name
            ),
        )
        return cast(dict[str, Any], body)

    async def _list(self, **params: Any) -> dict[str, Any]:
        page = await _call(
            "list exports",
            lambda: self.objects.list_namespaced_custom_object(
                er.GROUP, er.VERSION, self.namespace, er.PLURAL, **params
            ),
        )
        return cast(dict[str, Any], page)

    async def _owned(self, export_id: str, owner: str | None) -> dict[str, Any]:
        """The CR of ``export_id`` if ``owner`` asked for it (``None``: anyone, the admin scope);
        NotFound otherwise (either way)."""
        try:
            body = await self._read(export_id)
        except NotFound:
            body = None
        if body is None or (owner is not None and er.requester_of(body) != owner):
            raise NotFound(f"no export {export_id!r}", reason="ExportNotFound")
        return body

    # ---- the contract ----------------------------------------------------------------------

    async def submit(self, spec: ExportSpec) -> ExportStatus:
        body = er.body_from_export_spec(
            spec, self.namespace, labels={er.LABEL_MANAGED_BY: CREATED_BY}
        )
        try:
            created = await _call(
                f"create export {spec.id}",
                lambda: self.objects.create_namespaced_custom_object(
                    er.GROUP, er.VERSION, self.namespace, er.PLURAL, body
                ),
            )
        except Conflict:
            existing = await self._read(spec.id)
            if not _same_order(er.export_spec_from_body(existing), spec):
                raise Conflict(
                    f"export {spec.id} exists with a different order", reason="IdInUse"
                ) from None
            return er.export_status_from_body(existing)
        self._watch.submitted(spec.id, spec.requested_by)
        return er.export_status_from_body(cast(dict[str, Any], created))

    async def get(self, export_id: str, owner: str | None) -> ExportView:
        return _view(await self._owned(export_id, owner))

    async def list(
        self, owner: str | None, limit: int = LIST_LIMIT_DEFAULT, cursor: str | None = None
    ) -> ExportViewPage:
        if owner is None:  # the admin scope: everyone's
            page = await self._list()
        else:
            page = await self._list(
                label_selector=f"{er.LABEL_REQUESTER}={er.requester_label(owner)}"
            )
        items_in = page.get("items") or []
        views = [_view(i) for i in items_in if owner is None or er.requester_of(i) == owner]
        views.sort(key=_newest_first, reverse=True)
        if cursor is not None:
            after = _decode_cursor(cursor)
            views = [view for view in views if _newest_first(view) < after]
        items = views[:limit]
        more = len(views) > limit
        return ExportViewPage(items, _encode_cursor(items[-1]) if more and items else None)

    async def cancel(self, export_id: str, owner: str | None) -> ExportView:
        body = await self._owned(export_id, owner)
        if not er.export_status_from_body(body).phase.is_terminal:
            await _call(
                f"cancel export {export_id}",
                lambda: self.objects.patch_namespaced_custom_object(
                    er.GROUP,
                    er.VERSION,
                    self.namespace,
                    er.PLURAL,
                    export_id,
                    {"spec": {"cancel": True}},
                ),
            )
            wait = max(self.settings.cancel_grace_seconds * 3, CANCEL_WAIT_MIN_SECONDS)
            await self.wait_until_terminal(export_id, wait)
            body = await self._owned(export_id, owner)
        view = _view(body)
        if view.status.phase.is_terminal and view.status.phase is not Phase.CANCELLED:
            raise Conflict(
                f"export {export_id} already finished as {view.status.phase}",
                reason="AlreadyFinished",
            )
        return view
