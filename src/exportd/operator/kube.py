"""The operator's few Kubernetes API calls, with failures sorted into transient and permanent.

Everything goes through the generic custom-objects endpoints, Jobs included (``batch/v1`` is
addressed the same way), so the operator handles plain dicts end to end, exactly as it plans
and reads them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import aiohttp
from kubernetes.aio.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.aio.client.exceptions import ApiException

from exportd.contract import exportrequest as er
from exportd.operator.jobs import MANAGED_BY

T = TypeVar("T")
LIST_CHUNK = 500
TRANSIENT_STATUSES = frozenset({403, 408, 429})  # 403: RBAC not yet granted, retried later


class KubeError(Exception):
    def __init__(self, message: str, *, status: int | None, reason: str, transient: bool) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.transient = transient


class AlreadyExists(KubeError):
    pass


def _classify(exc: BaseException, what: str) -> KubeError:
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        reason, message = _status_details(exc)
        transient = status == 0 or status >= 500 or status in TRANSIENT_STATUSES
        kind = AlreadyExists if status == 409 and reason == "AlreadyExists" else KubeError
        return kind(
            f"{what}: {status} {reason}: {message}",
            status=status,
            reason=reason,
            transient=transient,
        )
    return KubeError(f"{what}: {exc!r}", status=None, reason="Unreachable", transient=True)


def _status_details(exc: ApiException) -> tuple[str, str]:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    return str(body.get("reason") or exc.reason or ""), str(body.get("message") or exc.body or "")


class KubeApi:
    """Requests and Jobs in one namespace (or all, when ``namespace`` is None)."""

    def __init__(self, client: ApiClient, namespace: str | None) -> None:
        self.objects = CustomObjectsApi(client)
        self.core = CoreV1Api(client)
        self.namespace = namespace

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _classify(exc, what) from exc

    async def _list(self, group: str, version: str, plural: str, **params: Any) -> list[Any]:
        items: list[Any] = []
        token: str | None = None
        while True:
            page = await self._call(
                f"list {plural}",
                self._lister(
                    group,
                    version,
                    plural,
                    {"limit": LIST_CHUNK, **params, **({"_continue": token} if token else {})},
                ),
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _lister(
        self, group: str, version: str, plural: str, params: dict[str, Any]
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def call() -> dict[str, Any]:
            if self.namespace is None:
                page = await self.objects.list_cluster_custom_object(
                    group, version, plural, **params
                )
            else:
                page = await self.objects.list_namespaced_custom_object(
                    group, version, self.namespace, plural, **params
                )
            return cast(dict[str, Any], page)

        return call

    async def list_requests(self) -> list[dict[str, Any]]:
        return await self._list(er.GROUP, er.VERSION, er.PLURAL)

    async def list_jobs(self) -> list[dict[str, Any]]:
        selector = f"{er.LABEL_MANAGED_BY}={MANAGED_BY}"
        return await self._list("batch", "v1", "jobs", label_selector=selector)

    async def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        created = await self._call(
            f"create Job {namespace}/{name}",
            lambda: self.objects.create_namespaced_custom_object(
                "batch", "v1", namespace, "jobs", manifest
            ),
        )
        return cast(dict[str, Any], created)

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            job = await self._call(
                f"get Job {namespace}/{name}",
                lambda: self.objects.get_namespaced_custom_object(
                    "batch", "v1", namespace, "jobs", name
                ),
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], job)

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and, in the foreground, its pods; False when it was already gone."""
        try:
            await self._call(
                f"delete Job {namespace}/{name}",
                lambda: self.objects.delete_namespaced_custom_object(
                    "batch", "v1", namespace, "jobs", name, propagation_policy="Foreground"
                ),
            )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body = await self._call(
                f"get {er.KIND} {namespace}/{name}",
                lambda: self.objects.get_namespaced_custom_object(
                    er.GROUP, er.VERSION, namespace, er.PLURAL, name
                ),
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], body)

    async def patch_request_status(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch a request's status; the request as written, None when it is gone."""
        try:
            written = await self._call(
                f"patch {er.KIND} {namespace}/{name} status",
                lambda: self.objects.patch_namespaced_custom_object_status(
                    er.GROUP, er.VERSION, namespace, er.PLURAL, name, body
                ),
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], written)

    async def create_event(self, body: dict[str, Any]) -> bool:
        """Post a core/v1 Event; False when one of that name exists (posted before)."""
        namespace = body["metadata"]["namespace"]
        try:
            await self._call(
                f"create Event {namespace}/{body['metadata']['name']}",
                lambda: self.core.create_namespaced_event(namespace, body),  # type: ignore[arg-type]
            )
        except AlreadyExists:
            return False
        return True
