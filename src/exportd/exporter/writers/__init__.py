"""Writer plug-ins: one module per file format, chosen by the export's format.

Adding a writer is one module with a ``Writer`` subclass exposing
``from_export_type(path, metadata, export_type)`` and one line in ``WRITER_KINDS``. An entry may
instead name a chooser, ``(export_type) -> Writer subclass``, when a format has several writers:
XLSX uses the fast writer unless the export type says ``xlsxWriter: xlsxwriter``.

Modules are imported only when a writer is opened, so a process that writes no Arrow batches
(the PostgreSQL CSV COPY path) never loads pyarrow.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from exportd.contract.catalog import ExportType
from exportd.contract.spec import ExportFormat
from exportd.exporter.writers.base import ExportMetadata, Writer, WriteSummary

WRITER_KINDS: dict[str, str] = {
    ExportFormat.XLSX.value: "exportd.exporter.writers.fastxlsx:choose_xlsx_writer",
    ExportFormat.CSV.value: "exportd.exporter.writers.csv:CsvWriter",
}


def writer_class(export_format: ExportFormat, export_type: ExportType) -> type[Writer]:
    """The writer class for a format, asking the format's chooser when it has one."""
    module_name, attribute = WRITER_KINDS[export_format.value].split(":")
    found = getattr(importlib.import_module(module_name), attribute)
    if isinstance(found, type) and issubclass(found, Writer):
        return found
    chosen: type[Writer] = found(export_type)
    return chosen


def open_writer(
    export_format: ExportFormat, path: Path, metadata: ExportMetadata, export_type: ExportType
) -> Writer:
    writer: Writer = writer_class(export_format, export_type).from_export_type(  # type: ignore[attr-defined]
        path, metadata, export_type
    )
    return writer


__all__ = [
    "WRITER_KINDS",
    "ExportMetadata",
    "WriteSummary",
    "Writer",
    "open_writer",
    "writer_class",
]
