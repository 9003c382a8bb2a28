"""A thread turning a set cancel event into ``cancel()`` on whatever is running a query.

Why a thread: a database call can block for a long time without returning to our code, so the
export's own loop cannot notice a cancel request; the driver's cancel, called from here, stops the
query on the server and makes the blocked call fail.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

log = logging.getLogger(__name__)
CANCEL_POLL_SECONDS = 0.1


class Cancellable(Protocol):
    """A source or copier whose running query can be cancelled from another thread."""

    def cancel(self) -> None: ...


class CancelWatcher:
    """Calls ``target.cancel()`` once the cancel event is set, until the ``with`` block ends."""

    def __init__(self, cancel: threading.Event, target: Cancellable) -> None:
        self._cancel = cancel
        self._target = target
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cancel-watcher", daemon=True)

    def _watch(self) -> None:
        # Waits on ``done``, not on ``cancel``: the end of the block wakes the thread at once
        # (every export ends so; waiting on ``cancel`` made each one wait out a poll interval),
        # while a cancel is seen within one interval.
        while not self._cancel.is_set():
            if self._done.wait(CANCEL_POLL_SECONDS):
                return
        log.info("cancel requested; cancelling the running query")
        self._target.cancel()

    def __enter__(self) -> CancelWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
