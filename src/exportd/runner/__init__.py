"""Embedded mode's executor: exporter child processes, bounded and queued (:mod:`.local`)."""

from exportd.runner.local import LocalRunner

__all__ = ["LocalRunner"]
