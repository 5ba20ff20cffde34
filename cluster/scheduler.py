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

    A task may carry several groups of one chunk (:class:`~cluster.worker.ChunkTask`);
    attempts, ``computed`` and ``failed`` count group chunks, and a retry carries only
    the groups whose chunk failed.

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
        """Count the task's done groups; retry (or give up on) the ones that failed."""
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
        failed = record.get("failed") or ({} if record["ok"] else dict.fromkeys(task.keys, record["error"]))
        share = record.get("seconds")
        share = share / len(task.layouts) if share is not None else None
        for lay in task.layouts:
            if lay.key not in failed:
                self.outcome.computed += 1
                self.attempts.pop((lay.key, task.chunk), None)
                self.bar.chunk_done(lay.key, task.chunk, lay.n_rows(task.chunk), share)
        if failed:
            self._retry_or_give_up(task.only(lay for lay in task.layouts if lay.key in failed), failed)

    def _retry_or_give_up(self, task: ChunkTask, errors: dict[str, str]) -> None:
        """Retry the task's groups that have attempts left, in one task; report the others as failed."""
        again = []
        for lay in task.layouts:
            tid = (lay.key, task.chunk)
            self.attempts[tid] = self.attempts.get(tid, 0) + 1
            if self.attempts[tid] < self.max_attempts:
                again.append(lay)
            else:
                self.attempts.pop(tid)
                self.outcome.failed.append({"key": lay.key, "chunk": task.chunk, "error": errors[lay.key]})
        if again:
            self.retry_queue.append(task.only(again))
