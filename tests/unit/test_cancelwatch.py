"""The cancel watcher: a cancel request set during the block reaches the running query's
``cancel()`` exactly once; a block that ends without one never cancels, and the watcher's
thread has ended when the block has (it no longer waits out a poll interval)."""

from __future__ import annotations

import threading

from exportd.exporter.cancelwatch import CancelWatcher


class Query:
    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.calls += 1
        self.cancelled.set()


def test_a_cancel_during_the_block_cancels_the_query_once() -> None:
    query, cancel = Query(), threading.Event()
    with CancelWatcher(cancel, query):
        cancel.set()
        assert query.cancelled.wait(5)
    assert query.calls == 1


def test_a_cancel_requested_before_the_block_is_seen_too() -> None:
    query, cancel = Query(), threading.Event()
    cancel.set()
    with CancelWatcher(cancel, query):
        assert query.cancelled.wait(5)
    assert query.calls == 1


def test_a_block_ending_without_a_cancel_never_cancels_and_stops_the_thread() -> None:
    query, cancel = Query(), threading.Event()
    watcher = CancelWatcher(cancel, query)
    with watcher:
        pass
    assert not watcher._thread.is_alive()
    cancel.set()  # too late: the export is over
    assert query.calls == 0
