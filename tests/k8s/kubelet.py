"""A test kubelet (and Job controller): runs each Job of the emulator as local processes.

It watches Jobs through the API like a node would, runs the container's command (``python`` is
this interpreter) with the environment Kubernetes would give it, and writes the Job's status
through the status subresource the way the Job controller does: ``startTime`` and ``active``,
then per attempt ``failed``, and at the end ``Complete`` or ``Failed`` with the reason
(``PodFailurePolicy``, ``BackoffLimitExceeded``, ``DeadlineExceeded``). ``podFailurePolicy``
FailJob rules on exit codes, ``backoffLimit`` and ``activeDeadlineSeconds`` are honoured. A
deleted Job's process gets SIGTERM, then SIGKILL after the grace period, like its pod would.

Environment of a process: the node's (``node_env``, e.g. where the API is), then ``envFrom``
(ConfigMaps and Secrets read from the API), then ``env`` (values, ``fieldRef`` on the pod's
namespace and name, ``configMapKeyRef``/``secretKeyRef``). A value naming an ``emptyDir`` mount
(``/tmp/...``) is moved to a private directory per pod; a PVC mount to ``claims[claimName]``;
ConfigMap and Secret volumes are written out as files (and settings naming them follow).

Failures can be injected per export: ``inject("exp-1", [75])`` makes its first attempt exit 75
without running anything; later attempts run for real. ``pause()`` keeps new pods Pending until
``resume()``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

JOBS = "/apis/batch/v1/jobs"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _now() -> str:
    moment = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class Attempt:
    job: str
    number: int
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    injected: bool = False


@dataclass
class Kubelet:
    api_url: str
    workdir: Path
    node_env: Mapping[str, str] = field(default_factory=dict)
    claims: Mapping[str, Path] = field(default_factory=dict)
    retry_delay: float = 0.0
    python: str = sys.executable  # what a container's ``python`` runs (an image's venv)
    attempts: list[Attempt] = field(default_factory=list)
    max_running: int = 0  # most Jobs ever running at once (started, not yet finished)
    _pending: int = 0
    _running: set[str] = field(default_factory=set)
    _injected: dict[str, list[int]] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None
    _watcher: asyncio.Task[None] | None = None
    _go: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._go.set()

    def pause(self) -> None:
        """New pods wait (Pending) until :meth:`resume`; running ones go on."""
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    @property
    def pending(self) -> int:
        """Pods waiting for :meth:`resume`."""
        return self._pending

    def inject(self, export_name: str, exit_codes: list[int]) -> None:
        self._injected[export_name] = list(exit_codes)

    def attempts_of(self, job: str) -> list[Attempt]:
        return [attempt for attempt in self.attempts if attempt.job == job]

    async def __aenter__(self) -> Kubelet:
        self._session = aiohttp.ClientSession(base_url=self.api_url)
        self._watcher = asyncio.create_task(self._watch(), name="kubelet-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [task for task in [self._watcher, *self._tasks.values()] if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # ---- watching ------------------------------------------------------------------------

    async def _watch(self) -> None:
        assert self._session is not None
        listing = await (await self._session.get(JOBS)).json()
        for job in listing["items"]:
            self._on_job("ADDED", job)
        since = listing["metadata"]["resourceVersion"]
        while True:
            params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "60"}
            async with self._session.get(JOBS, params=params) as response:
                async for line in response.content:
                    event = json.loads(line)
                    since = event["object"]["metadata"]["resourceVersion"]
                    self._on_job(event["type"], event["object"])

    def _on_job(self, kind: str, job: Mapping[str, Any]) -> None:
        uid = job["metadata"]["uid"]
        if kind == "DELETED":
            task = self._tasks.get(uid)
            if task is not None and not task.done():
                task.cancel()  # the pod goes: SIGTERM, then SIGKILL
            return
        finished = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (job.get("status") or {}).get("conditions") or []
        )
        if kind in ("ADDED", "MODIFIED") and uid not in self._tasks and not finished:
            self._tasks[uid] = asyncio.create_task(self._run_job(dict(job)), name=f"job-{uid}")

    # ---- the Job controller ----------------------------------------------------------------

    async def _run_job(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        spec = job["spec"]
        deadline = spec.get("activeDeadlineSeconds")
        self._running.add(name)
        self.max_running = max(self.max_running, len(self._running))
        try:
            await self._patch_status(job, {"startTime": _now(), "active": 1})
            try:
                condition, failed = await asyncio.wait_for(self._attempts(job), deadline)
            except TimeoutError:
                condition, failed = self._deadline_exceeded(), None
            status: dict[str, Any] = {"active": 0, "conditions": condition}
            if failed is not None:
                status["failed"] = failed
            if condition[-1]["type"] == "Complete":
                status |= {"succeeded": 1, "completionTime": _now()}
            await self._patch_status(job, status)
        finally:
            self._running.discard(name)

    async def _attempts(self, job: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
        spec = job["spec"]
        backoff_limit = int(spec.get("backoffLimit", 6))
        failed = 0
        while True:
            code = await self._run_pod(job, failed + 1)
            if code == 0:
                return [_condition("SuccessCriteriaMet", ""), _condition("Complete", "")], failed
            failed += 1
            if rule := _fail_job_rule(spec, code):
                message = f"Container exporter failed with exit code {code} matching {rule}"
                return _failure("PodFailurePolicy", message), failed
            if failed > backoff_limit:
                message = "Job has reached the specified backoff limit"
                return _failure("BackoffLimitExceeded", message), failed
            await self._patch_status(job, {"failed": failed, "active": 1})
            await asyncio.sleep(self.retry_delay)

    @staticmethod
    def _deadline_exceeded() -> list[dict[str, Any]]:
        return _failure("DeadlineExceeded", "Job was active longer than specified deadline")

    async def _patch_status(self, job: Mapping[str, Any], status: dict[str, Any]) -> None:
        assert self._session is not None
        meta = job["metadata"]
        url = f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}/status"
        async with self._session.patch(url, json={"status": status}, headers=MERGE) as response:
            if response.status not in (200, 404):
                raise RuntimeError(f"kubelet could not write Job status: {await response.text()}")

    # ---- the pod ---------------------------------------------------------------------------

    async def _run_pod(self, job: Mapping[str, Any], number: int) -> int:
        name = job["metadata"]["name"]
        export = job["metadata"].get("labels", {}).get("exportd.dev/export", "")
        attempt = Attempt(job=name, number=number)
        self.attempts.append(attempt)
        self._pending += 1
        try:
            await self._go.wait()
        finally:
            self._pending -= 1
        injected = self._injected.get(export)
        if injected:
            attempt.exit_code, attempt.injected = injected.pop(0), True
            return attempt.exit_code
        pod_dir = self.workdir / f"{name}-{number}"
        pod_dir.mkdir(parents=True)
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = await self._environment(job, container, pod, pod_dir)
        command = [*container.get("command", []), *container.get("args", [])]
        if command and command[0] in ("python", "python3"):
            command[0] = self.python
        process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            cwd=pod_dir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        grace = float(pod.get("terminationGracePeriodSeconds", 30))
        output = asyncio.ensure_future(process.communicate())
        try:
            await asyncio.shield(output)
        finally:
            if process.returncode is None:  # the pod is going away: SIGTERM, then SIGKILL
                await _terminate(process, grace)
            stdout, stderr = await output
            attempt.stdout, attempt.stderr = stdout.decode(), stderr.decode()
            attempt.exit_code = process.returncode
        return int(process.returncode or 0)

    async def _environment(
        self,
        job: Mapping[str, Any],
        container: Mapping[str, Any],
        pod: Mapping[str, Any],
        pod_dir: Path,
    ) -> dict[str, str]:
        namespace = job["metadata"]["namespace"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(pod_dir)}
        env["TMPDIR"] = str(pod_dir / "tmp")
        env.update(self.node_env)
        mounts, file_mounts = await self._mounts(namespace, container, pod, pod_dir)
        for source in container.get("envFrom") or []:
            values = await self._env_source(namespace, source)
            # Settings naming files of mounted ConfigMaps or Secrets (e.g. *_FILE) follow them;
            # other paths are the test machine's own (the emptyDir /tmp would shadow them).
            env.update({key: _remap(value, file_mounts) for key, value in values.items()})
        field_values = {"metadata.namespace": namespace, "metadata.name": f"{pod_dir.name}"}
        for item in container.get("env") or []:
            value = await self._env_value(namespace, item, field_values)
            env[item["name"]] = _remap(value, mounts)  # paths in the pod spec are the pod's
        return env

    async def _env_source(self, namespace: str, source: Mapping[str, Any]) -> dict[str, str]:
        if "configMapRef" in source:
            data = await self._read(namespace, "configmaps", source["configMapRef"]["name"])
            return dict(data.get("data") or {})
        data = await self._read(namespace, "secrets", source["secretRef"]["name"])
        return {k: base64.b64decode(v).decode() for k, v in (data.get("data") or {}).items()}

    async def _env_value(
        self, namespace: str, item: Mapping[str, Any], field_values: Mapping[str, str]
    ) -> str:
        if "value" in item:
            return str(item["value"])
        source = item["valueFrom"]
        if "fieldRef" in source:
            return field_values[source["fieldRef"]["fieldPath"]]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return str((await self._read(namespace, "configmaps", ref["name"]))["data"][ref["key"]])
        ref = source["secretKeyRef"]
        secret = await self._read(namespace, "secrets", ref["name"])
        return base64.b64decode(secret["data"][ref["key"]]).decode()

    async def _read(self, namespace: str, plural: str, name: str) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}") as resp:
            if resp.status != 200:
                raise RuntimeError(f"pod cannot start: {plural}/{name} is missing")
            data: dict[str, Any] = await resp.json()
            return data

    async def _mounts(
        self, namespace: str, container: Mapping[str, Any], pod: Mapping[str, Any], pod_dir: Path
    ) -> tuple[dict[str, Path], dict[str, Path]]:
        """Local directories for the container's mounts: all of them, and those holding the
        files of a ConfigMap or a Secret (written out as the kubelet projects them)."""
        volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
        mounts: dict[str, Path] = {}
        file_mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            local = pod_dir / "volumes" / mount["name"]
            if "persistentVolumeClaim" in volume:
                local = self.claims[volume["persistentVolumeClaim"]["claimName"]]
            elif "configMap" in volume or "secret" in volume:
                await self._project(namespace, volume, local)
                file_mounts[mount["mountPath"]] = local
            else:
                local.mkdir(parents=True)
            mounts[mount["mountPath"]] = local
        return mounts, file_mounts

    async def _project(self, namespace: str, volume: Mapping[str, Any], target: Path) -> None:
        if "configMap" in volume:
            source = volume["configMap"]
            data = (await self._read(namespace, "configmaps", source["name"])).get("data") or {}
            files = {key: str(value).encode() for key, value in data.items()}
        else:
            source = volume["secret"]
            data = (await self._read(namespace, "secrets", source["secretName"])).get("data") or {}
            files = {key: base64.b64decode(value) for key, value in data.items()}
        items = source.get("items") or [{"key": key, "path": key} for key in files]
        target.mkdir(parents=True)
        for item in items:
            (target / item["path"]).write_bytes(files[item["key"]])


def _remap(value: str, mounts: Mapping[str, Path]) -> str:
    for mount_path, local in mounts.items():
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(local) + value[len(mount_path) :]
    return value


async def _terminate(process: asyncio.subprocess.Process, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _fail_job_rule(spec: Mapping[str, Any], code: int) -> str | None:
    rules = (spec.get("podFailurePolicy") or {}).get("rules") or []
    for index, rule in enumerate(rules):
        on_codes = rule.get("onExitCodes")
        if rule.get("action") != "FailJob" or not on_codes:
            continue
        holds = code in on_codes.get("values", [])
        if holds == (on_codes.get("operator", "In") == "In"):
            return f"FailJob rule at index {index}"
    return None


def _condition(kind: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": _now(),
        "lastTransitionTime": _now(),
    }


def _failure(reason: str, message: str) -> list[dict[str, Any]]:
    return [_condition("FailureTarget", reason, message), _condition("Failed", reason, message)]
