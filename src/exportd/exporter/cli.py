"""Command line of the exporter process: spec in, JSON lines out, a documented exit code.

``python -m exportd.exporter [--spec-file PATH | --spec-json JSON]``; without either option the
spec comes from ``EXPORTD_SPEC_JSON`` or else stdin. The stdout protocol is described in
:mod:`exportd.exporter.reporting`, exit codes in :mod:`exportd.contract.errors`. SIGTERM and SIGINT
cancel the running query, remove the partial file and exit 75 (reason ``Cancelled``).

The export runs in a worker thread so the main thread stays free to receive signals even while
a database call blocks.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import IO, NoReturn

from pydantic import ValidationError

from exportd.contract.errors import ExitCode, ExportdError, InvalidInput, PermanentFailure
from exportd.contract.spec import ExportResult, ExportSpec
from exportd.exporter.reporting import Reporter, StdoutReporter, ThrottledProgress
from exportd.exporter.run import run_export
from exportd.ops import logs
from exportd.settings import ExporterSettings

log = logging.getLogger("exportd.exporter")
JOIN_POLL_SECONDS = 0.2


class UsageError(ExportdError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, reason="UsageError")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m exportd.exporter", description="Run one export.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--spec-file", type=Path, help="read the export spec (JSON) from a file")
    group.add_argument("--spec-json", help="the export spec as a JSON string")
    return parser


def load_spec(args: argparse.Namespace, settings: ExporterSettings, stdin: IO[str]) -> ExportSpec:
    if args.spec_file is not None:
        try:
            text = args.spec_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read spec file: {exc}", reason="InvalidSpec") from exc
    elif args.spec_json is not None:
        text = args.spec_json
    elif settings.spec_json is not None:
        text = settings.spec_json
    else:
        text = stdin.read()
    try:
        return ExportSpec.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidInput(f"invalid export spec: {exc}", reason="InvalidSpec") from exc


def main(
    argv: list[str] | None = None,
    *,
    reporter: Reporter | None = None,
    stdin: IO[str] | None = None,
) -> int:
    logs.configure_logging("INFO")  # JSON lines on stderr (stdout is the protocol)
    reporter = reporter or StdoutReporter()
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        reporter.error(exc)
        return ExitCode.USAGE
    try:
        settings = ExporterSettings()
        spec = load_spec(args, settings, stdin or sys.stdin)
    except ValidationError as exc:
        error = PermanentFailure(f"invalid settings: {exc}", reason="InvalidSettings")
        reporter.error(error)
        return error.exit_code
    except ExportdError as exc:
        reporter.error(exc)
        return exc.exit_code
    logs.setup_process_logging(settings)  # settings' level and format, secrets redacted
    logs.export_id_var.set(spec.id)
    if settings.reporter == "kubernetes":  # its module loads the CRD's models: only then
        from exportd.exporter.report_kubernetes import select_reporter

        reporter = select_reporter(settings, reporter)
    return run_reported(spec, settings, reporter)


def run_reported(spec: ExportSpec, settings: ExporterSettings, reporter: Reporter) -> int:
    """Run the export in a worker thread; signals set the cancel event. The handlers are in
    place before "started" is reported, so a signal sent after that line always cancels."""
    cancel = threading.Event()
    outcome: list[ExportResult | BaseException] = []
    progress = ThrottledProgress(reporter, spec.id, settings.progress_interval_seconds)

    def work() -> None:
        try:
            outcome.append(run_export(spec, settings, on_progress=progress, cancel=cancel))
        except BaseException as exc:
            outcome.append(exc)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.warning("received signal %s; cancelling export %s", signum, spec.id)
        cancel.set()

    previous = _install_signal_handlers(on_signal)
    reporter.started(spec.id)
    # The worker runs in a copy of this context, so its log lines carry the export id too.
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(work,), name=f"export-{spec.id}")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(JOIN_POLL_SECONDS)
    finally:
        _restore_signal_handlers(previous)
    return _report_outcome(outcome[0], reporter)


def _report_outcome(outcome: ExportResult | BaseException, reporter: Reporter) -> int:
    if isinstance(outcome, ExportResult):
        log.info("export stored at %s (%d rows)", outcome.object_key, outcome.rows_written)
        reporter.result(outcome)
        return ExitCode.OK
    if isinstance(outcome, ExportdError):
        log.error("export failed: %s (%s)", outcome.message, outcome.reason)
        reporter.error(outcome)
        return outcome.exit_code
    log.error("export crashed", exc_info=outcome)
    crash = ExportdError(f"unexpected error: {outcome!r}", reason="InternalError", retriable=True)
    reporter.error(crash)
    return ExitCode.TRANSIENT


def _install_signal_handlers(handler: signal._HANDLER) -> dict[int, signal._HANDLER]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, signal._HANDLER] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    return previous


def _restore_signal_handlers(previous: dict[int, signal._HANDLER]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
