"""Runs one command and prints its wall seconds, CPU seconds and peak RSS as one JSON line.

Why a wrapper: a process's peak RSS (``ru_maxrss`` from ``wait4``) counts its parent's memory
before ``exec`` too, so the parent must be small; this script is (a bare interpreter, ~10 MiB),
the benchmark runner with its readers loaded is not. Usage: ``measure.py CMD ARGS...``.
"""

from __future__ import annotations

import json
import os
import sys
import time

if __name__ == "__main__":
    started = time.perf_counter()
    pid = os.spawnvp(os.P_NOWAIT, sys.argv[1], sys.argv[1:])  # noqa: S606 - argv as given
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    print(
        json.dumps(
            {
                "code": os.waitstatus_to_exitcode(status),
                "wall": wall,
                "cpu": usage.ru_utime + usage.ru_stime,
                "peak_mib": usage.ru_maxrss / 1024,
            }
        )
    )
