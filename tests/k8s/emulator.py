"""A stateful apiserver for tests: kmock 0.8's emulator plus what kopf and our clients rely on.

kmock 0.8 serves objects from memory but lacks apiserver behaviours that kopf depends on (each of
these was seen to stall or loop kopf). This subclass serves every request on a known resource
itself and adds:

1. create fills ``apiVersion``, ``kind``, ``metadata.uid``, ``namespace``,
   ``creationTimestamp`` (whole seconds, as etcd stores it) and ``generation``; answers 201;
2. a cluster-wide, monotonically increasing ``metadata.resourceVersion`` on every write
   (soft deletion included) and on lists; no-op patches write nothing (no event);
3. a failed JSON-patch ``test`` (or any JSON-patch error) answers 422, not 500;
4. a merge patch or replace carrying a stale ``resourceVersion`` answers 409;
5. watch honours ``?resourceVersion=`` (events after it, no replay), subscribes before it takes
   its snapshot, honours ``?timeoutSeconds=`` and sends BOOKMARKs when allowed.

Also like the apiserver: label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, exists, ``!``)
and ``metadata.name``/``metadata.namespace`` field selectors; the status subresource is isolated
(the main endpoint ignores ``status``, ``/status`` changes nothing else); ``generation`` grows
when anything but metadata and status changes; finalizers delay deletion; creating a
CustomResourceDefinition serves its resource (as ``kubectl apply -f crds/`` does on a cluster).

Deliberately NOT done, like kmock: owner-reference garbage collection (an owned Job outlives its
owner), CRD schema validation (no CEL), pruning and defaulting. Code under test must not
depend on them. Admission on create is what a test installs (``ApiServer.admission``): a refusal
like a ResourceQuota's, or a call to a real validating webhook.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import json
import random
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import dicts as kmock_dicts
from kmock._internal import enums as kmock_enums

from tests.k8s.selectors import matches_fields, matches_labels

JSON_PATCH = "application/json-patch+json"
MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
BOOKMARK_SECONDS_DEFAULT = 5.0
RECHECK_SECONDS = 0.1
TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"

Key = tuple[kmock.resource, str | None, str]
T = TypeVar("T")


class ApiError(Exception):
    """Answered as a Kubernetes ``Status`` with this code and reason."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def response(self) -> aiohttp.web.Response:
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "code": self.code,
                "reason": self.reason,
                "message": self.message,
            },
            status=self.code,
        )


def _now() -> str:
    moment = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


def _essence(body: Mapping[str, Any]) -> dict[str, Any]:
    """What ``generation`` counts: everything but metadata and status."""
    return {k: v for k, v in body.items() if k not in ("metadata", "status")}


class Broadcast:
    """Wakes every waiter at once when anything was written. Lock-free on purpose: a watch
    handler cancelled (its client left) inside ``wait_for(Condition.wait())`` could stay
    stuck re-acquiring the condition's lock on Python 3.11, and hold the server's shutdown."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> None:
        """Until the next write, or ``timeout``; the caller re-checks either way."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


AdmissionHook = Callable[[str, dict[str, Any]], Awaitable[None]]


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    bookmark_seconds: float = BOOKMARK_SECONDS_DEFAULT
    _revision: int = attrs.field(default=0, init=False)
    _log: list[tuple[int, kmock.resource, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _changed: Broadcast = attrs.field(factory=lambda: Broadcast(), init=False)
    _columns: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict, init=False)
    # Open watch streams by (resource, label selector): tests wait for a client to be watching.
    watching: collections.Counter[tuple[str, str]] = attrs.field(
        factory=collections.Counter, init=False
    )
    # Who holds each open watch stream (resource, selector, User-Agent): a client that leaves
    # one open past its own shutdown is named by ``open_watches()``.
    _watchers: dict[int, str] = attrs.field(factory=dict, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    # Admission on create, run like the apiserver's before anything is stored: each hook gets
    # the resource ("batch/v1/jobs") and the object, and may refuse it by raising ApiError (a
    # ResourceQuota, a policy, or a validating webhook called over HTTP).
    admission: list[AdmissionHook] = attrs.field(factory=list, init=False)

    # ---- routing ---------------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None:
            return await super()._handle(request)  # discovery and anything not an object
        try:
            info = self._info(resource)
            if request.action is kmock_enums.action.WATCH:
                return await self._watch(request, info)
            result = await self._serve_object_request(request, info)
            status = 201 if request.action is kmock_enums.action.CREATE else 200
            columns = self._columns.get(str(resource))
            if columns is not None and "as=Table" in request.headers.get("Accept", ""):
                return aiohttp.web.json_response(
                    as_table(result, columns), status=status, content_type=TABLE_CONTENT_TYPE
                )
            return aiohttp.web.json_response(result, status=status)
        except ApiError as exc:
            return exc.response()

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        if resource not in self.resources:
            raise ApiError(404, "NotFound", f"the server could not find the resource {resource}")
        info: kmock.ResourceInfo = self.resources[resource]
        return info

    async def _serve_object_request(
        self, request: kmock.Request, info: kmock.ResourceInfo
    ) -> dict[str, Any]:
        action, method = request.action, request.method
        if request.subresource not in (None, "status") or (
            request.subresource == "status" and "status" not in info.subresources
        ):
            raise ApiError(404, "NotFound", f"no subresource {request.subresource!r}")
        if action is kmock_enums.action.LIST:
            return self._list(request, info)
        if action is kmock_enums.action.FETCH:
            return copy.deepcopy(self._get(self._key(request)))
        if action is kmock_enums.action.CREATE:
            return await self._create(request, info)
        if action is kmock_enums.action.UPDATE:
            return await self._patch(request, info)
        if action is kmock_enums.action.DELETE:
            return await self._delete(request)
        if method is kmock_enums.method.PUT and request.name is not None:
            return await self._replace(request, info)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    async def _serve_version(self, request: kmock.Request) -> Any:
        """kmock lists a subresource with its parent's verbs and short names, which makes kubectl
        warn that ``exr`` is ambiguous; the apiserver lists it with neither."""
        listing: Any = await super()._serve_version(request)
        for entry in listing["resources"]:
            if "/" in entry["name"]:
                entry.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return listing

    # ---- storage ---------------------------------------------------------------------------

    def _key(self, request: kmock.Request, name: str | None = None) -> Key:
        assert request.resource is not None
        return (request.resource, request.namespace, name or request.name or "")

    def _find(self, key: Key) -> dict[str, Any] | None:
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else obj.raw

    def _get(self, key: Key) -> dict[str, Any]:
        found = self._find(key)
        if found is None:
            raise ApiError(404, "NotFound", f'{key[0].plural} "{key[2]}" not found')
        return found

    async def _store(self, key: Key, body: dict[str, Any] | None, event: str) -> None:
        """Write a new version (or a deletion), stamp the next resourceVersion, tell watchers."""
        self._revision += 1
        if body is None:
            last = copy.deepcopy(self._get(key))
            last["metadata"]["resourceVersion"] = str(self._revision)
            self.objects[key].delete()
            payload = last
        else:
            body["metadata"]["resourceVersion"] = str(self._revision)
            if key in self.objects:
                self.objects[key].history.append(body)
            else:
                self.objects[key] = body
            payload = body
        self._log.append((self._revision, key[0], {"type": event, "object": payload}))
        self._changed.notify()

    def _visible(self, request: kmock.Request) -> list[dict[str, Any]]:
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")
        return [
            copy.deepcopy(obj.raw)
            for (resource, namespace, _), obj in self.objects.items()
            if resource == request.resource
            and not obj.deleted
            and (request.namespace is None or namespace == request.namespace)
            and matches_labels(obj.raw, labels)
            and matches_fields(obj.raw, fields)
        ]

    # ---- verbs -----------------------------------------------------------------------------

    def _list(self, request: kmock.Request, info: kmock.ResourceInfo) -> dict[str, Any]:
        assert request.resource is not None
        return {
            "apiVersion": _api_version(request.resource),
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": self._visible(request),
        }

    async def _create(self, request: kmock.Request, info: kmock.ResourceInfo) -> dict[str, Any]:
        assert request.resource is not None
        body = copy.deepcopy(request.data) if isinstance(request.data, dict) else None
        if body is None:
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        meta = body.setdefault("metadata", {})
        namespace = request.namespace if info.namespaced else None
        if namespace is not None and meta.get("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the body does not match the URL")
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        key = (request.resource, namespace, meta["name"])
        if self._find(key) is not None:
            raise ApiError(
                409, "AlreadyExists", f'{request.resource.plural} "{meta["name"]}" already exists'
            )
        if namespace is not None:
            meta["namespace"] = namespace
        resource = request.resource
        path = "/".join(
            part for part in (resource.group, resource.version, resource.plural) if part
        )
        for hook in self.admission:
            await hook(path, body)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta.pop("deletionTimestamp", None)
        body["apiVersion"] = _api_version(request.resource)
        body["kind"] = info.kind
        if "status" in info.subresources:
            body.pop("status", None)
        await self._store(key, body, "ADDED")
        self._serve_crd(body)
        return copy.deepcopy(body)

    async def _patch(self, request: kmock.Request, info: kmock.ResourceInfo) -> dict[str, Any]:
        key = self._key(request)
        old = self._get(key)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == JSON_PATCH and isinstance(request.data, list):
            try:
                new = jsonpatch.apply_patch(old, request.data, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", f"the JSON patch failed: {exc}") from exc
        elif content_type in MERGE_PATCHES and isinstance(request.data, dict):
            self._check_version(old, request.data)
            new = kmock_dicts.merge_patch_dict(old, request.data)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch {content_type!r}")
        return await self._write(key, old, copy.deepcopy(dict(new)), request, info)

    async def _replace(self, request: kmock.Request, info: kmock.ResourceInfo) -> dict[str, Any]:
        key = self._key(request)
        old = self._get(key)
        if not isinstance(request.data, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        self._check_version(old, request.data)
        new = copy.deepcopy(request.data)
        server_fields = ("uid", "creationTimestamp", "generation", "deletionTimestamp")
        for field in server_fields:
            if field in old["metadata"]:
                new.setdefault("metadata", {})[field] = old["metadata"][field]
        return await self._write(key, old, new, request, info)

    @staticmethod
    def _check_version(old: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        wanted = (data.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; "
                "please apply your changes to the latest version and try again",
            )

    async def _write(
        self,
        key: Key,
        old: dict[str, Any],
        new: dict[str, Any],
        request: kmock.Request,
        info: kmock.ResourceInfo,
    ) -> dict[str, Any]:
        if "status" in info.subresources:
            new = self._isolate_status(old, new, to_status=request.subresource == "status")
        new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "name", "namespace"):
            if field in old["metadata"]:
                new["metadata"][field] = old["metadata"][field]
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if new == old:
            return copy.deepcopy(old)  # a no-op writes nothing, like the apiserver
        if _essence(new) != _essence(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            await self._store(key, new, "MODIFIED")
            await self._store(key, None, "DELETED")
            return copy.deepcopy(new)
        await self._store(key, new, "MODIFIED")
        return copy.deepcopy(new)

    @staticmethod
    def _isolate_status(
        old: Mapping[str, Any], new: dict[str, Any], *, to_status: bool
    ) -> dict[str, Any]:
        if to_status:
            isolated = copy.deepcopy(dict(old))
            isolated.pop("status", None)
            if "status" in new:
                isolated["status"] = new["status"]
            isolated["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return isolated
        new.pop("status", None)
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        return new

    async def _delete(self, request: kmock.Request) -> dict[str, Any]:
        key = self._key(request)
        old = self._get(key)
        options = request.data if isinstance(request.data, dict) else {}
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") not in (None, old["metadata"]["uid"]):
            raise ApiError(409, "Conflict", "Precondition failed: UID in precondition")
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return copy.deepcopy(old)
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            await self._store(key, new, "MODIFIED")
            return copy.deepcopy(new)
        await self._store(key, None, "DELETED")
        return copy.deepcopy(old)

    # ---- watch -----------------------------------------------------------------------------

    async def _watch(
        self, request: kmock.Request, info: kmock.ResourceInfo
    ) -> aiohttp.web.StreamResponse:
        raw_request = request._raw_request
        assert raw_request is not None and request.resource is not None
        if request.params.get("sendInitialEvents") == "true":
            raise ApiError(400, "BadRequest", "sendInitialEvents is not supported here")
        since = request.params.get("resourceVersion", "")
        timeout = float(request.params.get("timeoutSeconds", "0") or 0) or None
        bookmarks = request.params.get("allowWatchBookmarks") == "true"
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw_request)
        # The cursor and the snapshot are taken with no await between them: one step.
        initial: list[dict[str, Any]] = []
        if since in ("", "0"):
            initial = [{"type": "ADDED", "object": obj} for obj in self._visible(request)]
            cursor = len(self._log)
        else:
            cursor = self._position_after(int(since))
        stream = (str(request.resource), request.params.get("labelSelector", ""))
        self.watching[stream] += 1
        agent = request.headers.get("User-Agent", "?")
        self._watchers[id(response)] = f"{stream[0]} [{stream[1]}] by {agent}"
        try:
            with contextlib.suppress(ConnectionResetError):
                await self._write_events(response, initial)
                async for events in self._follow(request, cursor, timeout, bookmarks):
                    await self._write_events(response, events)
                await response.write_eof()
        finally:
            self.watching[stream] -= 1
            del self._watchers[id(response)]
        return response

    def _position_after(self, revision: int) -> int:
        for index, (logged, _, _) in enumerate(self._log):
            if logged > revision:
                return index
        return len(self._log)

    async def _follow(
        self, request: kmock.Request, cursor: int, timeout: float | None, bookmarks: bool
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Batches of events after ``cursor``; ends at the timeout or when the client left."""
        assert request._raw_request is not None
        transport = request._raw_request.transport
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_seconds
        while (deadline is None or loop.time() < deadline) and not self._closing:
            if transport is None or transport.is_closing():
                return  # aiohttp does not cancel a handler whose client went away
            if cursor >= len(self._log):
                await self._changed.wait(RECHECK_SECONDS)
            fresh = self._log[cursor:]
            cursor = len(self._log)
            revision = self._revision
            events = [event for _, res, event in fresh if self._wanted(request, res, event)]
            if not events and bookmarks and loop.time() >= next_bookmark:
                events = [self._bookmark(request, revision)]
            if events:
                next_bookmark = loop.time() + self.bookmark_seconds
                yield copy.deepcopy(events)

    def _wanted(
        self, request: kmock.Request, resource: kmock.resource, event: Mapping[str, Any]
    ) -> bool:
        obj = event["object"]
        namespace = obj.get("metadata", {}).get("namespace")
        return (
            resource == request.resource
            and (request.namespace is None or namespace == request.namespace)
            and matches_labels(obj, request.params.get("labelSelector", ""))
            and matches_fields(obj, request.params.get("fieldSelector", ""))
        )

    @staticmethod
    def _bookmark(request: kmock.Request, revision: int) -> dict[str, Any]:
        assert request.resource is not None
        return {
            "type": "BOOKMARK",
            "object": {
                "apiVersion": _api_version(request.resource),
                "kind": "Bookmark",
                "metadata": {"resourceVersion": str(revision)},
            },
        }

    @staticmethod
    async def _write_events(
        response: aiohttp.web.StreamResponse, events: Iterable[Mapping[str, Any]]
    ) -> None:
        for event in events:
            await response.write(json.dumps(event).encode() + b"\n")

    # ---- CRDs ------------------------------------------------------------------------------

    def _serve_crd(self, body: Mapping[str, Any]) -> None:
        """A created CustomResourceDefinition makes its resource discoverable and served."""
        if body.get("kind") != "CustomResourceDefinition":
            return
        spec = body.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            key = f"{spec['group']}/{version['name']}/{names['plural']}"
            self._columns[str(kmock.resource(key))] = version.get("additionalPrinterColumns") or []
            self.resources[key] = kmock.ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular"),
                namespaced=spec.get("scope") == "Namespaced",
                verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
                shortnames=set(names.get("shortNames") or ()),
                categories=set(names.get("categories") or ()),
                subresources=set((version.get("subresources") or {}).keys()),
            )

    # ---- shutting down ---------------------------------------------------------------------

    def open_watches(self) -> list[str]:
        return sorted(self._watchers.values())

    def end_watches(self) -> None:
        """End every open watch stream, as an apiserver does when it shuts down; the HTTP
        server's shutdown would otherwise wait (60 s) for them."""
        self._closing = True
        self._changed.notify()

    # ---- test conveniences -----------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], T], timeout: float) -> T:
        """Re-check ``predicate`` after every write (and every 0.1 s, for state outside the
        apiserver such as the kubelet's) until it is truthy; TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate()):
            if loop.time() >= deadline:
                raise TimeoutError(f"still false after {timeout} s: {predicate}")
            await self._changed.wait(RECHECK_SECONDS)
        return result

    def current(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object as a GET would return it now, or None (for assertions)."""
        return self._find((kmock.resource(resource), namespace, name))

    def all_of(self, resource: str) -> list[dict[str, Any]]:
        wanted = kmock.resource(resource)
        return [
            copy.deepcopy(obj.raw)
            for (res, _, _), obj in self.objects.items()
            if res == wanted and not obj.deleted
        ]

    def history_of(self, resource: str, namespace: str | None, name: str) -> list[dict[str, Any]]:
        """Every stored version of one object, oldest first (deletions left out)."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects:
            return []
        return [dict(version) for version in self.objects[key].history if version is not None]


# ---- server-side printing (kubectl get) --------------------------------------------------------


def _path_value(obj: Mapping[str, Any], json_path: str) -> Any:
    value: Any = obj
    for part in json_path.strip(".").split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _age(stamp: str | None) -> str | None:
    if not stamp:
        return None
    then = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size, below in (("s", 1, 120), ("m", 60, 180), ("h", 3600, 48 * 3600)):
        if seconds < below:
            return f"{seconds // size}{unit}"
    return f"{seconds // 86400}d"


def as_table(result: Mapping[str, Any], columns: list[dict[str, Any]]) -> dict[str, Any]:
    """A list or an object as the apiserver's Table, with the CRD's printer columns."""
    items = result.get("items", [result])
    definitions = [{"name": "Name", "type": "string", "format": "name", "priority": 0}]
    definitions += [
        {
            "name": column["name"],
            "type": column["type"],
            "format": column.get("format", ""),
            "description": column.get("description", ""),
            "priority": column.get("priority", 0),
        }
        for column in columns
    ]
    rows = []
    for item in items:
        cells: list[Any] = [item["metadata"]["name"]]
        for column in columns:
            value = _path_value(item, column["jsonPath"])
            cells.append(_age(value) if column["type"] == "date" else value)
        partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1"}
        rows.append({"cells": cells, "object": {**partial, "metadata": item["metadata"]}})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": (result.get("metadata") or {}).get("resourceVersion")},
        "columnDefinitions": definitions,
        "rows": rows,
    }
