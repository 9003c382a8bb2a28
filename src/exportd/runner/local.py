"""The local runner: embedded mode's twin of "one Kubernetes Job per export".

Each export runs as its own exporter child process (:mod:`exportd.runner.child`); at most
``max_running_exports`` at a time and ``max_running_per_user`` of one user, the rest wait in a
FIFO queue that a free slot takes the first admissible export from. The record committed by the
admission transaction is the queue entry: the runner's in-memory queue only orders the waiting
records (oldest first), and the phase Queued and ``queuePosition`` are derived from it when a
record is read (:meth:`LocalRunner.shown_status`), never written per queued record, so a create
costs the same whatever the queue holds.

The queue and the slots have one owner: they change only in code without an ``await``
(:meth:`LocalRunner._admit` is synchronous), so nothing iterates them while another task changes
them, and no lock is held across store I/O. A background task that fails is logged.

Nothing finished is lost to a state-store outage: a child's result is written to the outbox
(:mod:`exportd.store.outbox`) before it is recorded, and every store write of the runner is
retried with backoff until the store answers. On start, Pending and Queued records are queued
again in the order they were accepted; a Running one is recorded Succeeded from its outbox entry
when its stored object exists, and otherwise queued again with the attempt the crash interrupted
given back (a crash or shutdown of the API is not the export's fault). Every ``SWEEP_SECONDS``
the runner also queues any waiting record it does not track (a create whose commit succeeded but
whose answer from the database was lost).

Retry policy, mirroring a Job's ``backoffLimit``: exit 2 or 3 is final (Failed with the
exporter's reason); exit 75 or any other code is retried up to ``max_attempts`` with exponential
backoff. Cancel sends SIGTERM, then SIGKILL after ``cancel_grace_seconds``, removes anything
published at the export's key, and records Cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import logging
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from exportd.contract.catalog import Catalog
from exportd.contract.errors import ExitCode, InvalidInput
from exportd.contract.spec import ExportErrorInfo, ExportResult, ExportStatus, Phase, utc_now
from exportd.delivery.by_email import failure_conditions
from exportd.ops import logs, metrics
from exportd.ops.housekeeping import remove_leftovers
from exportd.runner import child
from exportd.settings import ApiSettings
from exportd.storage.base import Storage
from exportd.store.base import ExportRecord, StateStore, StateUnavailable
from exportd.store.events import RecordEvents
from exportd.store.outbox import ResultOutbox

log = logging.getLogger(__name__)

ACTIVE_PHASES = (Phase.PENDING, Phase.QUEUED, Phase.RUNNING)
WAITING_PHASES = (Phase.PENDING, Phase.QUEUED)
BACKOFF_CAP_SECONDS = 60.0
DEFAULT_DEADLINE_SECONDS = 600.0
STORE_RETRY_FIRST_SECONDS = 0.2
STORE_RETRY_CAP_SECONDS = 2.0
SWEEP_SECONDS = 30.0
_T = TypeVar("_T")


@dataclass
class _Active:
    """An export that holds a slot: its task, its current process, and whether to stop."""

    export_id: str
    owner: str = ""
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None
    cancel_requested: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class LocalRunner:
    def __init__(
        self,
        settings: ApiSettings,
        store: StateStore,
        events: RecordEvents,
        storage: Storage,
        catalog: Catalog,
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.storage = storage
        self.catalog = catalog
        self.command = settings.exporter_command or child.default_command()
        self.work_dir = settings.data_dir / "runner"
        self.outbox = ResultOutbox.of_data_dir(settings.data_dir)
        # Waiting exports, oldest first (a dict keeps insertion order): export id -> owner.
        self._queue: dict[str, str] = {}
        self._active: dict[str, _Active] = {}
        self._stopping = False
        self._lock_file: IO[bytes] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.sweep_seconds = SWEEP_SECONDS

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._lock_data_dir()
        metrics.track_queue(lambda: len(self._queue), lambda: len(self._active))
        await self._recover()
        removed = await asyncio.to_thread(remove_leftovers, self.settings, set(), 0)
        if removed:
            log.info("removed %d leftover temporary or staged file(s)", removed)
        self._admit()
        self._sweeper = asyncio.create_task(self._sweep_periodically(), name="exportd-sweep")

    async def _sweep_periodically(self) -> None:
        """Queue any waiting record this runner does not track: one whose create lost the
        database's answer after its commit (the client saw 503, the record exists)."""
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                waiting = await self.store.list_by_phase(WAITING_PHASES)
            except Exception:
                log.warning("runner sweep could not read waiting exports", exc_info=True)
                continue
            for record in waiting:
                if not self.is_tracked(record.id):
                    log.warning("export %s was waiting untracked; queued now", record.id)
                    self._queue[record.id] = record.owner
            self._admit()

    async def stop(self) -> None:
        """Stop children without charging them an attempt; their records resume next start."""
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for active in list(self._active.values()):
            active.wake.set()
            if active.process is not None and active.process.returncode is None:
                active.process.terminate()
        tasks = [a.task for a in self._active.values() if a.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.cancel_grace_seconds)
            for active in self._active.values():
                if active.process is not None and active.process.returncode is None:
                    active.process.kill()
            if pending:
                await asyncio.wait(pending)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _lock_data_dir(self) -> None:
        """One runner per data directory: two would run every queued export twice."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.work_dir / "runner.lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeError(
                f"another exportd process runs exports from {self.settings.data_dir}"
            ) from None
        self._lock_file = handle

    async def _recover(self) -> None:
        for record in await self.store.list_by_phase(ACTIVE_PHASES):
            if record.phase is Phase.RUNNING:
                await self._reap_orphan(record)
                if await self._settle_from_outbox(record):
                    continue
                await self._write(
                    record.id,
                    self._interrupted(record),
                    expected_phases=[Phase.RUNNING],
                )
            self._queue[record.id] = record.owner
        log.info("runner resumed %d export(s)", len(self._queue))

    @staticmethod
    def _interrupted(record: ExportRecord) -> ExportStatus:
        """A Running record whose API died: it waits again, and gets back the attempt the
        crash interrupted (one in its retry pause, no pid and an error, had already ended)."""
        in_pause = record.pid is None and record.status.error is not None
        attempts = record.status.attempts if in_pause else max(0, record.status.attempts - 1)
        return record.status.evolve(phase=Phase.PENDING, attempts=attempts)

    async def _settle_from_outbox(self, record: ExportRecord) -> bool:
        """Record the kept result of an export whose file is stored; ``False`` when none."""
        result = self.outbox.get(record.id)
        if result is None:
            return False
        key = result.object_key
        if key is not None and not await asyncio.to_thread(self.storage.exists, key):
            log.warning(
                "export %s: result kept but %s is not stored; running it again", record.id, key
            )
            self.outbox.discard(record.id)
            return False
        await self._record_success(record, result)
        log.info("export %s: recorded Succeeded from its kept result", record.id)
        return True

    async def _reap_orphan(self, record: ExportRecord) -> None:
        """A child of a previous API still alive (its parent-death signal pending): stop it."""
        pid = record.pid
        if pid is None or not _is_exporter_of(pid, record.id):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(int(self.settings.cancel_grace_seconds * 10)):
            if not _is_exporter_of(pid, record.id):
                return
            await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # -- admission --------------------------------------------------------------------------

    def submit(self, export_id: str, owner: str) -> None:
        """Queue a committed Pending record and start it if a slot is free (no I/O)."""
        if export_id in self._queue or export_id in self._active:
            return
        self._queue[export_id] = owner
        self._admit()

    def _admit(self) -> None:
        """Fill free slots from the queue. Synchronous on purpose: no other task can change
        the queue or the slots while this looks at them."""
        if self._stopping:
            return
        admitted = False
        while len(self._active) < self.settings.max_running_exports:
            export_id = self._next_admissible()
            if export_id is None:
                break
            active = _Active(export_id, self._queue.pop(export_id))
            self._active[export_id] = active
            # A fresh context: the task must not carry the log fields of whoever admitted it.
            active.task = asyncio.create_task(self._run(active), context=contextvars.Context())
            active.task.add_done_callback(_log_failure)
            admitted = True
        if admitted:
            self._publish_queue()

    def _next_admissible(self) -> str | None:
        """The first queued export whose owner is below ``max_running_per_user``: one user's
        burst waits behind its own slots while other users' exports pass it."""
        running = Counter(active.owner for active in self._active.values())
        for export_id, owner in self._queue.items():
            if running[owner] < self.settings.max_running_per_user:
                return export_id
        return None

    def _publish_queue(self) -> None:
        """Positions changed: wake whoever watches a waiting export (in memory only)."""
        for export_id in list(self._queue):
            self.events.publish(export_id)

    def is_running(self, export_id: str) -> bool:
        """Whether this runner holds a slot for the export (its process runs or will retry)."""
        return export_id in self._active

    def is_tracked(self, export_id: str) -> bool:
        return export_id in self._active or export_id in self._queue

    def queue_position(self, export_id: str) -> int | None:
        if export_id not in self._queue:
            return None
        for position, queued in enumerate(self._queue, start=1):
            if queued == export_id:
                return position
        return None  # pragma: no cover - checked above

    def shown_status(self, record: ExportRecord) -> ExportStatus:
        """The record's status as clients see it: a waiting record is Queued at its place in
        the queue (derived now, never stored), or Pending while it is not in the queue."""
        if record.phase not in WAITING_PHASES:
            return record.status
        position = self.queue_position(record.id)
        phase = Phase.PENDING if position is None else Phase.QUEUED
        if record.phase is phase and record.status.queue_position == position:
            return record.status
        return record.status.evolve(phase=phase, queue_position=position)

    # -- one export -------------------------------------------------------------------------

    async def _run(self, active: _Active) -> None:
        logs.export_id_var.set(active.export_id)  # this task's own context (see _admit)
        try:
            await self._attempts(active)
        except Exception:
            log.exception("runner failed on export %s", active.export_id)
            if not self._stopping:  # stopping: the record resumes at the next start
                with contextlib.suppress(Exception):
                    await self._finish(
                        active.export_id,
                        Phase.FAILED,
                        ExportErrorInfo(reason="RunnerError", message="the local runner failed"),
                    )
        finally:
            self._active.pop(active.export_id, None)
            self.events.publish(active.export_id)
            self._admit()

    async def _attempts(self, active: _Active) -> None:
        export_id = active.export_id
        while True:
            record = await self._retrying(lambda: self.store.get(export_id))
            if record is None or record.phase.is_terminal:
                return
            if active.cancel_requested:
                await self._finish_cancelled(record)
                return
            if self._stopping:  # stopped during a retry backoff: the failed attempt counts
                await self._release_on_stop(record, refund=False)
                return
            record = await self._mark_running(record)
            if record is None:
                return
            outcome = await self._attempt(active, record)
            if active.cancel_requested:
                await self._finish_cancelled(record)
                return
            if outcome.succeeded and outcome.result is not None:  # kept even when stopping
                await asyncio.to_thread(self.outbox.put, export_id, outcome.result)
                await self._record_success(record, outcome.result)
                return
            if self._stopping:
                await self._release_on_stop(record, refund=True)
                return
            if await self._settle(record, outcome):
                return
            await self._backoff(active, record.status.attempts)

    async def _mark_running(self, record: ExportRecord) -> ExportRecord | None:
        status = record.status.evolve(
            phase=Phase.RUNNING,
            attempts=record.status.attempts + 1,
            queue_position=None,
            started_at=record.status.started_at or utc_now(),
            error=None,
        )
        return await self._write(record.id, status, expected_phases=ACTIVE_PHASES)

    async def _attempt(self, active: _Active, record: ExportRecord) -> child.ChildOutcome:
        spec_file = child.write_spec_file(self.work_dir / "specs", record.spec)
        log_path = self.work_dir / "logs" / f"{record.id}.{record.status.attempts}.log"
        try:
            process = await child.start_child(
                self.command, spec_file, child.exporter_env(self.settings), log_path
            )
        except OSError as exc:
            return child.ChildOutcome(exit_code=-1, stderr_tail=f"cannot start exporter: {exc}")
        active.process = process
        if active.cancel_requested:  # cancel arrived while the process was starting
            process.terminate()
        status = record.status

        async def on_rows(rows: int) -> None:
            nonlocal status
            status = status.evolve(rows=rows)
            with contextlib.suppress(StateUnavailable):  # progress only: the next one will do
                await self.store.update_status(
                    record.id, status, pid=process.pid, expected_phases=[Phase.RUNNING]
                )
                self.events.publish(record.id)

        await self._write(record.id, status, pid=process.pid, expected_phases=[Phase.RUNNING])
        timeout = self._deadline_of(record)
        try:
            return await asyncio.wait_for(child.follow_child(process, on_rows, log_path), timeout)
        except TimeoutError:
            await self._terminate(process)
            return child.ChildOutcome(
                exit_code=int(ExitCode.PERMANENT),
                error=ExportErrorInfo(
                    reason="DeadlineExceeded", message=f"the export ran longer than {timeout} s"
                ),
            )
        finally:
            if process.returncode is None:
                await self._terminate(process)
            active.process = None

    def _deadline_of(self, record: ExportRecord) -> float:
        """The export type's ``timeoutSeconds`` (a Job's activeDeadlineSeconds)."""
        try:
            return float(self.catalog.get(record.spec.type).timeout_seconds)
        except InvalidInput:
            return DEFAULT_DEADLINE_SECONDS

    async def _record_success(self, record: ExportRecord, result: ExportResult) -> None:
        """Record the kept result (retrying until the store answers), then forget it."""
        current = await self._retrying(lambda: self.store.get(record.id)) or record
        if current.phase is Phase.RUNNING:
            status = current.status.evolve(
                phase=Phase.SUCCEEDED,
                rows=result.rows_written,
                bytes=result.bytes,
                sha256=result.sha256,
                object_key=result.object_key,
                started_at=result.started_at,
                completed_at=result.completed_at,
                error=None,
                queue_position=None,
                delivered=result.delivered,
                conditions=result.conditions,
            )
            await self._write(record.id, status, pid=None, expected_phases=[Phase.RUNNING])
        self.outbox.discard(record.id)

    async def _settle(self, record: ExportRecord, outcome: child.ChildOutcome) -> bool:
        """Record a failed attempt; ``False`` when it is to be retried."""
        current = await self._retrying(lambda: self.store.get(record.id)) or record
        error = outcome.error or ExportErrorInfo(
            reason="ExporterCrashed",
            message=f"exporter exited with code {outcome.exit_code}: {outcome.stderr_tail[-500:]}",
        )
        if outcome.permanent:
            await self._finish(record.id, Phase.FAILED, error)
            return True
        if current.status.attempts >= self.settings.max_attempts:
            message = f"{error.message} (gave up after {current.status.attempts} attempts)"
            await self._finish(
                record.id, Phase.FAILED, ExportErrorInfo(reason=error.reason, message=message)
            )
            return True
        await self._write(
            record.id, current.status.evolve(error=error), expected_phases=[Phase.RUNNING]
        )
        metrics.observe_retry(record.spec, error)
        return False

    async def _backoff(self, active: _Active, attempts: int) -> None:
        delay = min(self.settings.retry_backoff_seconds * 2 ** (attempts - 1), BACKOFF_CAP_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(active.wake.wait(), delay)

    async def _release_on_stop(self, record: ExportRecord, *, refund: bool) -> None:
        """Shutdown is not the export's fault: the record waits (Pending) for the next start,
        and an attempt the shutdown interrupted is given back."""
        current = await self._retrying(lambda: self.store.get(record.id)) or record
        attempts = current.status.attempts - 1 if refund else current.status.attempts
        status = current.status.evolve(phase=Phase.PENDING, attempts=max(0, attempts))
        await self._write(record.id, status, pid=None, expected_phases=[Phase.RUNNING])

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(self, export_id: str) -> None:
        """Cancel a waiting or running export and return once it is recorded Cancelled."""
        active = self._active.get(export_id)
        if active is None:
            # Recorded first, then dequeued: if a slot takes it meanwhile, its task finds the
            # record Cancelled and stops (and is stopped below if it got further).
            record = await self.store.get(export_id)
            if record is not None and not record.phase.is_terminal:
                await self._finish_cancelled(record)
            if self._queue.pop(export_id, None) is not None:
                self._publish_queue()
            active = self._active.get(export_id)
            if active is None:
                return
        active.cancel_requested = True
        active.wake.set()
        if active.process is not None and active.process.returncode is None:
            await self._terminate(active.process)
        if active.task is not None:
            await asyncio.shield(active.task)

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), self.settings.cancel_grace_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _finish_cancelled(self, record: ExportRecord) -> None:
        """Nothing may stay published for a cancelled export, even if the child got there."""
        await asyncio.to_thread(self.storage.delete, record.spec.object_key)
        await self._finish(record.id, Phase.CANCELLED, None)

    # -- store writes -----------------------------------------------------------------------

    async def _finish(self, export_id: str, phase: Phase, error: ExportErrorInfo | None) -> None:
        record = await self._retrying(lambda: self.store.get(export_id))
        if record is None or record.phase.is_terminal:
            return
        status = record.status.evolve(
            phase=phase,
            error=error,
            queue_position=None,
            completed_at=utc_now(),
            conditions=failure_conditions(record.spec, error) or record.status.conditions,
        )
        await self._write(export_id, status, pid=None, expected_phases=ACTIVE_PHASES)

    async def _write(
        self,
        export_id: str,
        status: ExportStatus,
        *,
        pid: int | None = None,
        expected_phases: tuple[Phase, ...] | list[Phase] | None = None,
    ) -> ExportRecord | None:
        record = await self._retrying(
            lambda: self.store.update_status(
                export_id, status, pid=pid, expected_phases=expected_phases
            )
        )
        if record is not None and expected_phases is not None and status.phase.is_terminal:
            metrics.observe_finished(record.spec, record.status)  # the one terminal write
        self.events.publish(export_id)
        return record

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()`` until the state store answers, with backoff; given up only on stop (the
        record is then resumed at the next start, from the outbox if it had finished)."""
        delay = STORE_RETRY_FIRST_SECONDS
        while True:
            try:
                return await call()
            except StateUnavailable:
                if self._stopping:
                    raise
                log.warning("state store unavailable; the runner retries in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_CAP_SECONDS)


def _log_failure(task: asyncio.Task[None]) -> None:
    """A runner task's failure is logged here, never left as "exception never retrieved"."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("runner task %s failed", task.get_name(), exc_info=exc)


def _is_exporter_of(pid: int, export_id: str) -> bool:
    """Whether ``pid`` is alive and an exporter working on ``export_id`` (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"exportd.exporter" in cmdline and f"{export_id}.json".encode() in cmdline
