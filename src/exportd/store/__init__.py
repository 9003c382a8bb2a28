"""Where export records live: one interface (:mod:`.base`), SQLite for embedded mode."""

from exportd.store.base import ExportPage, ExportRecord, StateStore, store_from_settings

__all__ = ["ExportPage", "ExportRecord", "StateStore", "store_from_settings"]
