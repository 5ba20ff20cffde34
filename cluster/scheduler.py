"""Chunk tasks on a pool of worker actors: a bounded window per worker, dead workers replaced, failures retried.

Example::

    outcome = ChunkScheduler(pool, progress, max_attempts=3).run(tasks)
    outcome.computed, outcome.failed

``pool`` has ``actors`` (each answers ``pid()``) and ``replace(slot, dead)``;
``progress`` has ``chunk_done(key, chunk, codes, seconds)``
(:class:`cluster.progress.SweepProgress`).

A worker is given chunks only once it has answered ``pid()``: a worker that no
node can hold (its node was lost and no other has room) never holds chunks, and
the others finish the sweep without it. Only when no worker runs at all does the
scheduler wait for one, at most ``start_wait_s``; then the chunks left fail and
the run ends partial (``gangeo resume`` finishes it).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .worker import ChunkTask

__all__ = ["PER_WORKER_IN_FLIGHT", "START_WAIT_S", "ChunkScheduler", "Outcome", "sigint_latch"]

PER_WORKER_IN_FLIGHT = 2  # one computing, one queued: no idle gap between chunks
START_WAIT_S = 600.0  # with no worker running, how long to wait for one to start (an autoscaler may add a node)
_POLL_S = 5.0


@contextmanager
def sigint_latch() -> Iterator[threading.Event]:
    """An event a SIGINT sets while the block runs, besides raising KeyboardInterrupt as Python's handler does.

    Ray's core runs Python's signal handlers inside its own waits and turns the KeyboardInterrupt into a
    status; a loop that checks the event ends even where that status is lost. Only the main thread can
    set a handler, and a handler other than Python's default is left as it is (the event then stays clear).
    """
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield event
        return

    def latch(signum, frame):
        event.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, latch)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class Outcome:
    """What scheduling every pending chunk came to."""

    computed: int = 0
    failed: list[dict] = field(default_factory=list)
    store_retries: int = 0
    idle_slots: list[int] = field(default_factory=list)  # workers not running at the end (lost, or never started)


class ChunkScheduler:
    """Runs chunk tasks on a pool: a bounded window per running worker, dead workers replaced, failures retried.

    A task may carry several groups of one chunk (:class:`~cluster.worker.ChunkTask`);
    attempts, ``computed`` and ``failed`` count group chunks, and a retry carries only
    the groups whose chunk failed.

    Only the in-flight window and chunks awaiting a retry are held, so the
    driver's memory does not grow with the number of chunks.
    """

    def __init__(self, pool, bar, max_attempts: int, *, start_wait_s: float = START_WAIT_S) -> None:
        self.pool, self.bar, self.max_attempts, self.start_wait_s = pool, bar, max_attempts, start_wait_s
        self.inflight: dict = {}  # ref -> (slot, actor, task)
        self.load = [0] * len(pool.actors)
        self.starting: dict = {}  # pid() ref -> (slot, actor): a worker given chunks once it answers
        self.running: set[int] = set()
        self.failed_starts = [0] * len(pool.actors)  # in a row, per slot: a slot that never starts is retired
        self.retry_queue: list[ChunkTask] = []
        self.attempts: dict[tuple[str, int], int] = {}
        self.outcome = Outcome()
        self._next: ChunkTask | None = None
        self._idle_since: float | None = None

    def run(self, tasks) -> Outcome:
        import ray

        self._tasks = iter(tasks)
        for slot, actor in enumerate(self.pool.actors):
            self._probe(slot, actor)
        with sigint_latch() as interrupted:
            while self._more() or self.inflight:
                if interrupted.is_set():  # an interrupt that Ray's wait took in and dropped
                    raise KeyboardInterrupt
                self._fill()
                if not self._waiting_allowed():
                    break
                ready, _ = ray.wait([*self.inflight, *self.starting], num_returns=1, timeout=_POLL_S)
                for ref in ready:
                    if ref in self.starting:
                        self._started(ref)
                    else:
                        self._settle(ref)
        self.outcome.idle_slots = sorted(set(range(len(self.pool.actors))) - self.running)
        return self.outcome

    # ---- tasks ----

    def _more(self) -> bool:
        if self._next is None and not self.retry_queue:
            self._next = next(self._tasks, None)
        return self._next is not None or bool(self.retry_queue)

    def _take(self) -> ChunkTask | None:
        if self.retry_queue:
            return self.retry_queue.pop()
        if self._more():
            task, self._next = self._next, None
            return task
        return None

    def _fill(self) -> None:
        """Give the least loaded running worker a task until every window is full or none is left."""
        while self.running:
            slot = min(self.running, key=self.load.__getitem__)
            if self.load[slot] >= PER_WORKER_IN_FLIGHT:
                return
            task = self._take()
            if task is None:
                return
            actor = self.pool.actors[slot]
            self.inflight[actor.compute.remote(task)] = (slot, actor, task)
            self.load[slot] += 1

    # ---- workers ----

    def _probe(self, slot: int, actor) -> None:
        """Give ``actor`` chunks once it answers: until then it may be waiting for a node."""
        self.running.discard(slot)
        self.starting[actor.pid.remote()] = (slot, actor)

    def _started(self, ref) -> None:
        import ray
        from ray.exceptions import RayActorError

        slot, actor = self.starting.pop(ref)
        if self.pool.actors[slot] is not actor:
            return
        try:
            ray.get(ref)
        except RayActorError:  # died while starting (its node lost too, or its constructor failed)
            self.failed_starts[slot] += 1
            if self.failed_starts[slot] < self.max_attempts:
                self._replace(slot, actor)
            return
        self.failed_starts[slot] = 0
        self.running.add(slot)

    def _replace(self, slot: int, dead) -> None:
        if self.pool.actors[slot] is not dead:  # another of its chunks already had it replaced
            return
        self.pool.replace(slot, dead)
        self._probe(slot, self.pool.actors[slot])

    def _waiting_allowed(self) -> bool:
        """False when no worker runs and none started within ``start_wait_s``: the chunks left then fail."""
        if self.inflight or self.running or not self._more():
            self._idle_since = None
            return True
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        if self.starting and now - self._idle_since < self.start_wait_s:
            return True
        why = (f"no worker running: none started within {self.start_wait_s:.0f} s; does any node still have "
               "the CPUs/GPUs resources asks for? (gangeo resume finishes the run)")
        while (task := self._take()) is not None:
            self.outcome.failed.append({"key": task.key, "chunk": task.chunk, "error": why})
        return False

    # ---- results ----

    def _settle(self, ref) -> None:
        """Count the task's done groups; retry (or give up on) the ones that failed."""
        import ray
        from ray.exceptions import RayActorError

        slot, actor, task = self.inflight.pop(ref)
        self.load[slot] -= 1
        try:
            record = ray.get(ref)
        except RayActorError as exc:  # the worker process (or its node) died: replace it, retry the chunk
            self._replace(slot, actor)
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
