"""One exporter child process: how it is started and what it says on stdout.

The child is ``python -m exportd.exporter --spec-file PATH`` with an environment built here from
the API's settings (never inherited wholesale), so the exporter sees exactly the data directory,
catalog, sources and storage the API uses. ``PR_SET_PDEATHSIG`` makes the kernel send SIGTERM to
the child when the API dies, even by SIGKILL, so no export outlives the process that tracks it.

Stdout protocol (JSON lines): ``started``, ``progress`` (``rows``), then exactly one ``result``
(success) or ``error`` (``reason``, ``message``, ``retriable``) as the last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from exportd.contract.errors import ExitCode
from exportd.contract.spec import ExportErrorInfo, ExportResult, ExportSpec
from exportd.settings import CommonSettings

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
STDERR_TAIL_BYTES = 2000
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


@dataclass
class ChildOutcome:
    """How one attempt ended."""

    exit_code: int
    result: ExportResult | None = None
    error: ExportErrorInfo | None = None
    error_retriable: bool | None = None
    stderr_tail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == ExitCode.OK and self.result is not None

    @property
    def permanent(self) -> bool:
        """Exit 2 and 3 are the exporter saying "retrying cannot help"."""
        return self.exit_code in (ExitCode.USAGE, ExitCode.PERMANENT)


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, str | int | float | Path):
        return str(value)
    return json.dumps(value, default=_reveal)


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot pass {type(value).__name__} to the exporter environment")


def exporter_env(settings: CommonSettings) -> dict[str, str]:
    """The exporter's whole environment: the shared settings as ``EXPORTD_*`` variables."""
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "HOME": str(settings.data_dir),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in CommonSettings.model_fields:
        value = getattr(settings, name)
        if value is not None:
            env[f"EXPORTD_{name.upper()}"] = _env_value(value)
    return env


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the forked child, before exec
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(ExitCode.TRANSIENT)

    return preexec


def write_spec_file(directory: Path, spec: ExportSpec) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{spec.id}.json"
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(spec.model_dump_json(by_alias=True), encoding="utf-8")
    scratch.replace(path)
    return path


async def start_child(
    command: list[str], spec_file: Path, env: dict[str, str], stderr_path: Path
) -> asyncio.subprocess.Process:
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    with stderr_path.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            *command,
            "--spec-file",
            str(spec_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
            preexec_fn=_die_with_parent(os.getpid()),
        )


def default_command() -> list[str]:
    return [sys.executable, "-m", "exportd.exporter"]


async def follow_child(
    process: asyncio.subprocess.Process,
    on_rows: Callable[[int], Any],
    stderr_path: Path,
) -> ChildOutcome:
    """Read the child's JSON lines until it exits; report progress through ``on_rows``."""
    outcome = ChildOutcome(exit_code=-1)
    assert process.stdout is not None
    async for raw in process.stdout:
        message = _parse_line(raw)
        if message is None:
            continue
        event = message.get("event")
        if event == "progress" and isinstance(message.get("rows"), int):
            await on_rows(message["rows"])
        elif event == "result":
            outcome.result = _result_of(message)
        elif event == "error":
            outcome.error = ExportErrorInfo(
                reason=str(message.get("reason") or "ExporterError"),
                message=str(message.get("message") or ""),
            )
            outcome.error_retriable = bool(message.get("retriable"))
    outcome.exit_code = await process.wait()
    outcome.stderr_tail = _tail(stderr_path)
    return outcome


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(raw)
    except ValueError:
        log.info("exporter said: %s", raw.decode(errors="replace").rstrip())
        return None
    return message if isinstance(message, dict) else None


_RESULT_KEYS = {info.alias or name for name, info in ExportResult.model_fields.items()}


def _result_of(message: dict[str, Any]) -> ExportResult | None:
    """The result line's ExportResult fields; unknown keys (``event``, ``exportId``) dropped."""
    try:
        return ExportResult.model_validate({k: v for k, v in message.items() if k in _RESULT_KEYS})
    except ValidationError as exc:
        log.warning("unreadable exporter result line: %s", exc)
        return None


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError), path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - STDERR_TAIL_BYTES))
        return handle.read().decode(errors="replace").strip()
    return ""
