"""Chunk tasks on a pool of worker actors: a bounded window per worker, dead workers replaced, failures retried.

Example::

    outcome = ChunkScheduler(pool, progress, max_attempts=3).run(tasks)
    outcome.computed, outcome.failed

``pool`` has ``actors`` and ``replace(slot, dead)``; ``progress`` has
``chunk_done(key, chunk, codes, seconds)`` (:class:`cluster.progress.SweepProgress`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .worker import ChunkTask

__all__ = ["PER_WORKER_IN_FLIGHT", "ChunkScheduler", "Outcome"]

PER_WORKER_IN_FLIGHT = 2  # one computing, one queued: no idle gap between chunks


@dataclass
class Outcome:
    """What scheduling every pending chunk came to."""

    computed: int = 0
    failed: list[dict] = field(default_factory=list)
    store_retries: int = 0


class ChunkScheduler:
    """Runs chunk tasks on a pool: a bounded window per worker, dead workers replaced, failures retried.

    Only the in-flight window and chunks awaiting a retry are held, so the
    driver's memory does not grow with the number of chunks.
    """

    def __init__(self, pool, bar, max_attempts: int) -> None:
        self.pool, self.bar, self.max_attempts = pool, bar, max_attempts
        self.inflight: dict = {}  # ref -> (slot, actor, task)
        self.load = [0] * len(pool.actors)
        self.retry_queue: list[ChunkTask] = []
        self.attempts: dict[tuple[str, int], int] = {}
        self.outcome = Outcome()

    def run(self, tasks) -> Outcome:
        import ray

        self._tasks = iter(tasks)
        self._fill()
        while self.inflight:
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=5.0)
            for ref in ready:
                self._settle(ref)
            self._fill()
        return self.outcome

    def _fill(self) -> None:
        """Give the least loaded worker a task until every worker's window is full or none is left."""
        while True:
            slot = min(range(len(self.load)), key=self.load.__getitem__)
            if self.load[slot] >= PER_WORKER_IN_FLIGHT:
                return
            task = self.retry_queue.pop() if self.retry_queue else next(self._tasks, None)
            if task is None:
                return
            actor = self.pool.actors[slot]
            self.inflight[actor.compute.remote(task)] = (slot, actor, task)
            self.load[slot] += 1

    def _settle(self, ref) -> None:
        import ray
        from ray.exceptions import RayActorError

        slot, actor, task = self.inflight.pop(ref)
        self.load[slot] -= 1
        try:
            record = ray.get(ref)
        except RayActorError as exc:  # the worker process died: replace it, retry the chunk
            self.pool.replace(slot, actor)
            record = {"ok": False, "error": f"worker died: {type(exc).__name__}"}
        self.outcome.store_retries += int(record.get("store_retries") or 0)
        if record["ok"]:
            self.outcome.computed += 1
            self.attempts.pop((task.key, task.chunk), None)
            self.bar.chunk_done(task.key, task.chunk, task.layout.n_rows(task.chunk), record.get("seconds"))
        else:
            self._retry_or_give_up(task, record["error"])

    def _retry_or_give_up(self, task: ChunkTask, error: str) -> None:
        tid = (task.key, task.chunk)
        self.attempts[tid] = self.attempts.get(tid, 0) + 1
        if self.attempts[tid] < self.max_attempts:
            self.retry_queue.append(task)
        else:
            self.attempts.pop(tid)
            self.outcome.failed.append({"key": task.key, "chunk": task.chunk, "error": error})
