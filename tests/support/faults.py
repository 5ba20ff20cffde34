"""Test-only sweep workers that fail on purpose, so production code holds no fault hooks.

Example::

    summary = run_sweep(spec, worker_cls=crash_after_write(1, tmp_path / "crashed"))
"""

from __future__ import annotations

import os
from pathlib import Path

from cluster.worker import SweepWorker

__all__ = ["always_fail", "crash_after_write"]


def crash_after_write(chunk: int, marker: Path) -> type[SweepWorker]:
    """A worker class whose first process to reach ``chunk`` dies after writing it, before its done entry.

    As a crashed machine would: the data is in the store, the chunk does not count.
    ``marker`` (written before dying) makes the retry on a fresh worker succeed.
    """
    marker = Path(marker)

    class CrashAfterWrite(SweepWorker):
        def mark_done(self, task) -> None:
            if task.chunk == chunk and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            super().mark_done(task)

    return CrashAfterWrite


def always_fail(key: str) -> type[SweepWorker]:
    """A worker class whose every chunk of group ``key`` fails to compute (a chunk that keeps failing).

    The spec itself is valid, so planning passes and the other groups complete.
    """

    class AlwaysFail(SweepWorker):
        def write(self, task, arrays, seconds) -> None:
            if task.key == key:
                raise RuntimeError(f"injected failure for {key}")
            super().write(task, arrays, seconds)

    return AlwaysFail
