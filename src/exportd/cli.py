"""The ``exportd`` command: ``serve`` the API, ``run`` one export here and now, mint a ``token``.

``serve`` is embedded mode on one machine (SQLite, local exporter processes, the DuckDB sample
database). ``run`` needs no server: it runs the exporter in this process and copies the file to
``-o``. ``token`` signs a development JWT with the same secret ``serve`` verifies with.
``load-sample`` copies the sample data into PostgreSQL or MySQL sources (the compose stack's).

Errors: one line on stderr, ``exportd: <what went wrong> (<Reason>)``, and the documented exit
code (:class:`exportd.contract.errors.ExitCode`: 2 usage, 3 permanent, 75 transient). A Python
traceback
only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from exportd import __version__
from exportd.contract.catalog import Catalog, VariableKind
from exportd.contract.errors import (
    ExitCode,
    ExportdError,
    FieldError,
    InvalidInput,
    PermanentFailure,
    TransientFailure,
)
from exportd.contract.spec import ExportFormat, ExportSpec, VariableValue, new_export_id, utc_now
from exportd.ops import logs
from exportd.settings import ApiSettings, ExporterSettings

DEV_SUBJECT = "dev"
QUICKSTART_TTL = 24 * 3600
SEED_REQUEST = {
    "type": "userExport",
    "returnType": "url",
    "fileName": "myexport.xlsx",
    "variables": {"x": 1, "y": 2},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exportd", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"exportd {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the Python traceback of an error"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API in embedded mode")
    serve.add_argument("--host", help="listen address (default: settings host)")
    serve.add_argument("--port", type=int, help="listen port (default: settings port)")
    serve.add_argument(
        "--print-quickstart", action="store_true", help="print a dev token and a curl line"
    )

    run = commands.add_parser("run", help="run one export in this process")
    run.add_argument("type", help="export type name from the catalog")
    run.add_argument(
        "-v", "--var", action="append", default=[], metavar="NAME=VALUE", help="a variable"
    )
    run.add_argument("-o", "--output", type=Path, help="output file (.xlsx or .csv)")

    token = commands.add_parser("token", help="mint a development token")
    token.add_argument("--sub", required=True, help="the subject (user) the token names")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--scope", action="append", default=[], help="a scope to grant")
    token.add_argument("--email", help="the email claim (who e-mailed exports may go to)")

    backup = commands.add_parser("backup", help="save export records (and ExportRequests)")
    backup.add_argument(
        "--to", type=Path, help="directory the backup goes under (default: DATA_DIR/backups)"
    )
    restore = commands.add_parser("restore", help="bring a backup back (never overwrites)")
    restore.add_argument("source", type=Path, help="a backup directory made by `exportd backup`")
    commands.add_parser("housekeeping", help="delete what expired and fail stuck exports, once")

    load = commands.add_parser(
        "load-sample", help="replace the sample tables in postgres or mysql sources"
    )
    load.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="a configured source (EXPORTD_SOURCES__...)"
    )
    load.add_argument(
        "--only",
        action="append",
        metavar="DATA_SET",
        help="load only this data set of the sample (default: all; a wrong name lists them)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _command(args)
    except Exception as exc:
        error = as_exportd_error(exc)
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        _print_error(error, sys.stderr)
        return int(error.exit_code)


def as_exportd_error(exc: Exception) -> ExportdError:
    """Any failure as the error taxonomy: what the one line says and which exit code."""
    if isinstance(exc, ExportdError):
        return exc
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors()
        )
        return PermanentFailure(f"invalid {exc.title}: {problems}", reason="InvalidConfiguration")
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return TransientFailure(f"{exc.strerror or exc}{where}", reason="FileError")
    return ExportdError(
        f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
        reason="InternalError",
        retriable=True,
    )


def _command(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return serve(args)
    if args.command == "run":
        return run(args, sys.stdout, sys.stderr)
    if args.command in ("backup", "restore", "housekeeping"):
        from exportd.ops.backup import run_command  # the operations commands

        return run_command(args, sys.stdout)
    if args.command == "load-sample":
        from exportd.sample.sampleload import run_command as load_sample

        return load_sample(args, sys.stdout)
    return token(args, sys.stdout)


def _print_error(exc: ExportdError, stream: IO[str]) -> None:
    """One line: the message, the field errors, the reason."""
    fields = "".join(f"; {error.field}: {error.message}" for error in getattr(exc, "errors", []))
    message = " ".join(f"{exc.message}{fields}".split())
    print(f"exportd: {message} ({exc.reason})", file=stream)


# -- serve ----------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from exportd.api import create_app

    overrides: dict[str, Any] = {k: v for k in ("host", "port") if (v := getattr(args, k))}
    settings = _api_settings(overrides)
    _check_tls(settings)
    if "public_url" not in settings.model_fields_set:
        scheme = "https" if settings.tls_cert_file else "http"
        settings.public_url = f"{scheme}://{settings.host}:{settings.port}"
    if args.print_quickstart:
        print(quickstart(settings), flush=True)
    logs.setup_process_logging(settings)
    # uvicorn answers SIGTERM/SIGINT by draining in-flight requests, then re-raises the signal
    # with the handlers found at start: a no-op handler makes that a normal exit 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    from exportd.api.serving import DrainingServer

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # exportd.ops.logs: JSON lines, redacted
        access_log=False,  # our middleware logs requests, without query strings
        timeout_graceful_shutdown=int(settings.cancel_grace_seconds) + 5,
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
    )
    DrainingServer(config, app, settings.shutdown_drain_seconds).run()
    return 0


def _api_settings(overrides: dict[str, Any]) -> ApiSettings:
    """Settings, or a refusal naming each bad field (never the values: they may be secrets)."""
    try:
        return ApiSettings(**overrides)
    except ValidationError as exc:
        errors = [
            FieldError(".".join(str(part) for part in error["loc"]) or "settings", error["msg"])
            for error in exc.errors(include_input=False)
        ]
        raise InvalidInput("invalid settings", errors=errors) from None


def _check_tls(settings: ApiSettings) -> None:
    """Load the certificate and key once before serving: a bad pair fails here, in one line."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert_file, settings.tls_key_file
        )
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"cannot serve HTTPS with {settings.tls_cert_file} and {settings.tls_key_file}: {exc}"
        ) from None


def quickstart(settings: ApiSettings) -> str:
    from exportd.security.tokens import mint_token

    dev_token = mint_token(
        DEV_SUBJECT,
        settings.secret("jwt_secret"),
        QUICKSTART_TTL,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    base = settings.public_url.rstrip("/")
    request = (
        f"curl -sS -X POST {base}/export -H 'Authorization: Bearer {dev_token}' "
        f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(SEED_REQUEST))}"
    )
    pick_url = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"url\"])'"
    return "\n".join(
        [
            f"exportd {__version__} on {base} (data in {settings.data_dir})",
            "",
            f"A development token for {DEV_SUBJECT!r}, valid 24 h:",
            f"  {dev_token}",
            "",
            "Export myexport.xlsx (users of tiers 1-2) with:",
            f'  curl -sS -o myexport.xlsx "$({request} | {pick_url})"',
            "",
            "A token for another user (here bob), from the repository folder:",
            "  make token SUB=bob",
            f"  or: EXPORTD_DATA_DIR={shlex.quote(str(settings.data_dir))} "
            f"{shlex.quote(_exportd_command())} token --sub bob",
            "",
            f"The web page: {base}/ (paste the token).",
            "",
        ]
    )


def _exportd_command() -> str:
    """How this shell can run ``exportd`` again: the venv's script, relative when it is below."""
    script = Path(sys.executable).parent / "exportd"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


# -- token ----------------------------------------------------------------------------------


def token(args: argparse.Namespace, out: IO[str]) -> int:
    from exportd.security.tokens import mint_token

    settings = _api_settings({})  # the data directory and secret exactly as `serve` finds them
    algorithm = settings.jwt_algorithms[0]
    if not algorithm.startswith("HS"):
        raise InvalidInput(f"cannot mint {algorithm} tokens: only a shared secret (HS*) can")
    print(
        mint_token(
            args.sub,
            _served_secret(settings),
            args.ttl,
            algorithm=algorithm,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            scopes=args.scope,
            email=args.email,
        ),
        file=out,
    )
    return 0


def _served_secret(settings: ApiSettings) -> str:
    """The secret a server verifies with; never a new one (no server would accept its tokens)."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path = settings.dev_secret_path("jwt_secret")
    if not path.is_file():
        raise InvalidInput(
            f"no exportd server uses the data directory {settings.data_dir} (it has no "
            f"{path.relative_to(settings.data_dir)}), so no server would accept a token signed "
            "here. Run this where you ran `exportd serve` (or `make token SUB=...` in the "
            "repository), or set EXPORTD_DATA_DIR (or EXPORTD_JWT_SECRET) to the server's."
        )
    return settings.secret("jwt_secret")


# -- run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from exportd.exporter.run import run_export
    from exportd.storage.base import storage_from_settings

    settings = ExporterSettings()
    catalog = Catalog.load(settings.resolved_catalog_path)
    output: Path = (args.output or Path(f"{args.type}.xlsx")).absolute()
    spec = ExportSpec(
        id=new_export_id(),
        type=args.type,
        format=_format_of(output),
        file_name=output.name,
        variables=parse_variables(catalog, args.type, args.var),
        requested_by="cli",
        requested_at=utc_now(),
    )
    catalog.bind(spec.type, dict(spec.variables))
    progress = ProgressLine(err) if err.isatty() else None
    cancel = threading.Event()
    try:
        result = run_export(spec, settings, on_progress=progress, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        print("\nexportd: cancelled", file=err)
        return int(ExitCode.TRANSIENT)
    finally:
        if progress is not None:
            progress.close()
    storage = storage_from_settings(settings)
    _move_out(storage, result.object_key, output)
    storage.delete(result.object_key)  # the output file is the product; keep no second copy
    print(f"{result.rows_written} rows, {result.bytes} bytes", file=err)
    print(output, file=out)
    return 0


def _format_of(output: Path) -> ExportFormat:
    try:
        return ExportFormat(output.suffix.lower().lstrip("."))
    except ValueError:
        raise InvalidInput(
            "the output file must end in .xlsx or .csv",
            errors=[FieldError("output", "must end in .xlsx or .csv")],
        ) from None


def parse_variables(catalog: Catalog, type_name: str, pairs: list[str]) -> dict[str, VariableValue]:
    """``NAME=VALUE`` pairs, each value typed by the catalog's schema of that variable."""
    schema = catalog.get(type_name).variables
    variables: dict[str, VariableValue] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise InvalidInput(
                f"variable {pair!r} is not NAME=VALUE", errors=[FieldError("var", pair)]
            )
        kind = schema[name].type if name in schema else VariableKind.STRING
        variables[name] = _typed(kind, text, name)
    return variables


def _typed(kind: VariableKind, text: str, name: str) -> VariableValue:
    try:
        if kind is VariableKind.INTEGER:
            return int(text)
        if kind is VariableKind.NUMBER:
            return float(text)
        if kind is VariableKind.BOOLEAN:
            return {"true": True, "false": False}[text.lower()]
    except (ValueError, KeyError):
        raise InvalidInput(
            f"variable {name}: {text!r} is not a {kind}",
            errors=[FieldError(f"variables.{name}", f"not a {kind}")],
        ) from None
    return text


def _move_out(storage: Any, key: str, output: Path) -> None:
    """The stored file at ``output``: hard-linked when local storage lies on the same
    filesystem (no copy), else copied under a temporary name; then renamed in place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.part")
    partial.unlink(missing_ok=True)
    stored = storage.path_of(key) if hasattr(storage, "path_of") else None
    try:
        if stored is None:
            raise OSError("not a local file")
        os.link(stored, partial)
    except OSError:
        with partial.open("wb") as handle:
            for chunk in storage.open_read(key):
                handle.write(chunk)
    partial.replace(output)


class ProgressLine:
    """Rows so far and the rate, redrawn in place on a terminal (the total is not known)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.started = time.monotonic()

    def __call__(self, rows: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.stream.write(
            f"\r  {rows:>12,} rows  {rows / elapsed:>10,.0f} rows/s  {elapsed:6.1f} s"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


if __name__ == "__main__":
    raise SystemExit(main())
