"""Worker pools for the chunk scheduler's tests: workers that die, replacements that no node can hold.

Example::

    pool = StrandedPool(tmp_path, n=2, crash={0})   # worker 0 dies on its first chunk; no node has room
    outcome = ChunkScheduler(pool, ChunkLog(), max_attempts=3).run(chunk_tasks(6))
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cluster.layout import GroupLayout
from cluster.worker import ChunkTask

__all__ = ["ChunkLog", "StrandedPool", "chunk_tasks"]

# A custom resource no node of the tests' Ray has: an actor asking for it waits for a node forever,
# as a replacement does once its node is lost and the others are full.
ABSENT = "gangeo_test_absent_node"


def chunk_tasks(n_chunks: int) -> list[ChunkTask]:
    lay = GroupLayout("fake", "z", "mse", n=2 * n_chunks, dim=2, chunk_size=2)
    return [ChunkTask("r", lay, c, "fake", {}, 0, "exact", None) for c in range(n_chunks)]


class FakeWorker:
    """Answers ``pid()``; ``compute`` logs the chunk to ``log`` and succeeds, or (``crash``) kills its process first."""

    def __init__(self, log: str, crash: bool = False) -> None:
        self.log, self.crash = log, crash

    def pid(self) -> int:
        return os.getpid()

    def compute(self, task: ChunkTask) -> dict:
        if self.crash:
            os._exit(1)  # as a lost node: no record comes back
        time.sleep(0.05)
        with open(self.log, "a") as f:
            f.write(f"{task.chunk}\n")
        return {"key": task.key, "chunk": task.chunk, "ok": True, "seconds": 0.05, "error": None}


class StrandedPool:
    """``n`` workers by slot; those in ``crash`` die on their first chunk, and every replacement (and every
    worker in ``stranded`` from the start) asks for a node that does not exist."""

    def __init__(self, root: Path, n: int, *, crash=(), stranded=()) -> None:
        import ray

        self.log = str(Path(root) / "computed.txt")
        self._cls = ray.remote(FakeWorker)
        self.actors = [self._new(stranded=i in stranded, crash=i in crash) for i in range(n)]
        self.replaced = 0

    def _new(self, *, stranded: bool, crash: bool = False):
        opts = {"resources": {ABSENT: 1}} if stranded else {}
        return self._cls.options(num_cpus=0.1, max_restarts=0, **opts).remote(self.log, crash)

    def replace(self, slot: int, dead) -> None:
        import ray

        if self.actors[slot] is dead:
            ray.kill(dead, no_restart=True)
            self.actors[slot] = self._new(stranded=True)
            self.replaced += 1

    def wait_started(self, timeout: float = 60.0) -> "StrandedPool":
        """Wait until every worker answers: on a loaded machine a late one would get no chunk (nor crash)."""
        import ray

        ray.get([a.pid.remote() for a in self.actors], timeout=timeout)
        return self

    def computed(self) -> list[int]:
        """Chunks computed, in order, one line per computation."""
        return [int(x) for x in Path(self.log).read_text().split()] if os.path.exists(self.log) else []

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)


class ChunkLog:
    """A progress sink that keeps the chunks reported done."""

    def __init__(self) -> None:
        self.done: list[int] = []

    def chunk_done(self, key, chunk, codes, seconds) -> None:
        self.done.append(chunk)
