"""Finished results kept on disk until the state store has recorded them (embedded mode).

An exporter child reports its result once, on stdout. If the state store cannot take it at that
moment (a database outage, the API stopping), the result must not be lost: the runner first
writes it here, durably (written, fsynced, renamed), then records it in the store, retrying until
the store answers, and only then removes the entry. At start-up every Running record is looked
up here, so an export whose file was stored is recorded Succeeded, never retried, failed or
refunded. Housekeeping also leaves a Running record with an entry here alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from exportd.contract.spec import ExportResult

log = logging.getLogger(__name__)


class ResultOutbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def of_data_dir(cls, data_dir: Path) -> ResultOutbox:
        return cls(data_dir / "runner" / "results")

    def _path(self, export_id: str) -> Path:
        return self.directory / f"{export_id}.json"

    def put(self, export_id: str, result: ExportResult) -> None:
        """Keep ``result`` so that it survives a crash from the moment this returns."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self._path(export_id)
        scratch = final.with_suffix(".json.tmp")
        with scratch.open("wb") as handle:
            handle.write(result.model_dump_json(by_alias=True).encode())
            handle.flush()
            os.fsync(handle.fileno())
        scratch.replace(final)
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def get(self, export_id: str) -> ExportResult | None:
        try:
            raw = self._path(export_id).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return ExportResult.model_validate_json(raw)
        except ValidationError:
            log.warning("unreadable result record of export %s; ignored", export_id)
            return None

    def has(self, export_id: str) -> bool:
        return self._path(export_id).is_file()

    def discard(self, export_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(export_id).unlink()
