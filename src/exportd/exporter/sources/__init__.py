"""Source plug-ins: one module per database kind, named by ``SourceConfig.kind``.

Adding a source is one module with a ``Source`` subclass exposing ``from_config`` and one line in
``SOURCE_KINDS``.
"""

from __future__ import annotations

import importlib

from exportd.exporter.sources.base import QueryOptions, Source
from exportd.settings import SourceConfig

SOURCE_KINDS: dict[str, str] = {
    "duckdb": "exportd.exporter.sources.duckdb:DuckDBSource",
    "postgres": "exportd.exporter.sources.postgres:PostgresSource",
    "mysql": "exportd.exporter.sources.mysql:MySQLSource",
}


def open_source(config: SourceConfig) -> Source:
    module_name, class_name = SOURCE_KINDS[config.kind].split(":")
    source_class = getattr(importlib.import_module(module_name), class_name)
    source: Source = source_class.from_config(config)
    return source


__all__ = ["SOURCE_KINDS", "QueryOptions", "Source", "open_source"]
