"""The sweep driver: plan a run, fan its chunks out to Ray workers, resume, reduce.

Example::

    from cluster.spec import load_spec
    from cluster.driver import run_sweep, resume_sweep
    summary = run_sweep(load_spec("jobs/examples/quickstart.yaml"))     # embedded Ray
    summary = resume_sweep("quickstart", store="./gangeo-results")      # only missing chunks

The driver keeps a bounded window of in-flight chunks (``ray.wait``, two per
worker), replaces a worker that dies and retries its chunk, and gives up on a
chunk after ``max_attempts`` failures, reporting its index and error while the
others complete. Execution is at-least-once; writes are idempotent because a
chunk's codes come from the spec's seed and whole Zarr chunks are overwritten.
"""

from __future__ import annotations

import os
import sys
import time

from .ray_runtime import init_ray
from .storage import StoreError, check_store, parse_store_url, store_env
from .store import GroupPlan, RunStore
from .trust import gate_stored_spec
from .worker import FAULT_ENV, SweepWorker, chunk_task, worker_options

__all__ = ["plan_groups", "resume_sweep", "run_sweep"]

MAX_ATTEMPTS = 3
_PER_WORKER_IN_FLIGHT = 2  # one computing, one queued: no idle gap between chunks


def _n_workers(spec) -> int:
    import ray

    res = spec.resources
    if res["workers"]:
        return int(res["workers"])
    total = ray.cluster_resources()
    if res["gpus_per_worker"]:
        return max(1, int(total.get("GPU", 0) // res["gpus_per_worker"]))
    return max(1, int(total.get("CPU", 1) // max(res["cpus_per_worker"], 1e-9)))


def _worker_env(s3_endpoint: str | None) -> dict:
    env = store_env(s3_endpoint)
    if os.environ.get(FAULT_ENV):
        env[FAULT_ENV] = os.environ[FAULT_ENV]
    return env


class _Pool:
    """Worker actors by slot; a dead one is replaced in its slot."""

    def __init__(self, spec, n: int, env: dict, s3_endpoint: str | None) -> None:
        import ray

        res = spec.resources
        gpus = res["gpus_per_worker"]
        self._cls = ray.remote(SweepWorker).options(
            **worker_options(gpus=gpus, cpus=res["cpus_per_worker"]), runtime_env={"env_vars": env})
        self._args = (spec.store,)
        self._kwargs = {"s3_endpoint": s3_endpoint, "threads": max(1, int(res["cpus_per_worker"])),
                        "device": "cuda" if gpus else "cpu"}
        self.actors = [self._new() for _ in range(n)]
        self.replaced = 0

    def _new(self):
        return self._cls.remote(*self._args, **self._kwargs)

    def replace(self, slot: int, dead) -> None:
        import ray

        if self.actors[slot] is dead:
            ray.kill(dead, no_restart=True)
            self.actors[slot] = self._new()
            self.replaced += 1

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)


def plan_groups(spec, pool: _Pool) -> list[tuple[object, str, GroupPlan]]:
    """(generator spec, space, group plan) for every (model, space, target) of the spec."""
    import ray

    from cluster.spec import ALL_LAYERS

    out = []
    for gen in spec.generators:
        for space in gen.spaces:
            info = _describe(pool, gen, space)
            targets = []
            for t in spec.targets:
                targets += [f"layer:{n}" for n in info["layers"]] if t == ALL_LAYERS else [t]
            for t in dict.fromkeys(targets):
                out.append((gen, space, GroupPlan(gen.label, space, t, spec.n_codes, info["dim"], spec.chunk_size)))
    return out


def _describe(pool: _Pool, gen, space: str) -> dict:
    """The worker's description of a generator; a load failure becomes one GeometryError line."""
    import ray

    from geometry_core.errors import GeometryError

    try:
        return ray.get(pool.actors[0].describe.remote(gen.name, space, dict(gen.options)))
    except Exception as exc:  # RayTaskError wraps the worker's exception (multi-line traceback)
        cause = getattr(exc, "cause", None) or exc
        text = str(cause).strip().splitlines()
        msg = text[0] if isinstance(cause, GeometryError) and text else f"{type(cause).__name__}: " + (
            text[-1] if text else "")
        raise GeometryError(f"generator {gen.name!r} ({space}): {msg}") from None


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="pt", file=sys.stderr, dynamic_ncols=True, desc="sweep",
                disable=not (enabled and sys.stderr.isatty()))


def _schedule(pool: _Pool, tasks, bar, max_attempts: int) -> tuple[int, list[dict], int]:
    """Run every task of the iterator ``tasks`` on the pool.

    Returns (chunks computed, failed chunk records, store retries the workers made).
    Only the in-flight window and chunks awaiting a retry are held, so the
    driver's memory does not grow with the number of chunks.
    """
    import ray
    from ray.exceptions import RayActorError

    tasks = iter(tasks)
    retry_queue, inflight, attempts, failed, computed, store_retries = [], {}, {}, [], 0, 0
    load = [0] * len(pool.actors)

    def submit() -> None:
        while True:
            slot = min(range(len(load)), key=load.__getitem__)
            if load[slot] >= _PER_WORKER_IN_FLIGHT:
                return
            task = retry_queue.pop() if retry_queue else next(tasks, None)
            if task is None:
                return
            actor = pool.actors[slot]
            inflight[actor.compute.remote(task)] = (slot, actor, task)
            load[slot] += 1

    submit()
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=5.0)
        for ref in ready:
            slot, actor, task = inflight.pop(ref)
            load[slot] -= 1
            try:
                record = ray.get(ref)
            except RayActorError as exc:  # the worker process died: replace it, retry the chunk
                pool.replace(slot, actor)
                record = {"ok": False, "error": f"worker died: {type(exc).__name__}"}
            store_retries += int(record.get("store_retries") or 0)
            tid = (task["key"], task["chunk"])
            if record["ok"]:
                computed += 1
                attempts.pop(tid, None)
                bar.update(min(task["chunk_size"], task["n"] - task["chunk"] * task["chunk_size"]))
                continue
            attempts[tid] = attempts.get(tid, 0) + 1
            if attempts[tid] < max_attempts:
                retry_queue.append(task)
            else:
                attempts.pop(tid)
                failed.append({"key": task["key"], "chunk": task["chunk"], "error": record["error"]})
        submit()
    return computed, failed, store_retries


def _pending(spec, plans, masks):
    """Chunk tasks of every chunk without done, generated lazily."""
    for (gen, space, plan), mask in zip(plans, masks):
        for i in range(plan.n_chunks):
            if not mask[i]:
                yield chunk_task(spec.name, plan, i, gen, space, spec)


def _precheck(spec, s3_endpoint: str | None) -> None:
    """Fail fast, before Ray starts and without writing: store reachable, same spec, no live driver."""
    from .lock import RunLockedError, is_stale, lock_info

    loc = check_store(spec.store, s3_endpoint=s3_endpoint)
    if loc.kind == "local" and not os.path.isdir(loc.path):
        return  # a new store: nothing to compare with
    try:
        rs = RunStore(spec.store, s3_endpoint=s3_endpoint, mode="r", create=False)
    except StoreError:
        return  # an empty S3 prefix: created later
    if not rs.has_run(spec.name):
        return
    if rs.attrs(spec.name).get("identity") != spec.identity():
        RunStore(spec.store, s3_endpoint=s3_endpoint).create(spec.name, spec, [])  # raises RunExistsError
    info = lock_info(spec.store, spec.name, s3_endpoint=s3_endpoint) if _lock_group_exists(rs) else None
    if info is not None and not is_stale(info, time.time()):
        raise RunLockedError(f"run {spec.name!r} is being written by another driver (host {info.get('host')}, "
                             f"pid {info.get('pid')}); wait for it to finish")


def _lock_group_exists(rs: RunStore) -> bool:
    from .lock import LOCK_GROUP

    return LOCK_GROUP in rs.root.group_keys()


def run_sweep(spec, *, address: str | None = None, store: str | None = None, s3_endpoint: str | None = None,
              progress: bool = True, max_attempts: int = MAX_ATTEMPTS) -> dict:
    """Run (or resume) the sweep ``spec``; returns a summary dict (status, chunks, failed, timing).

    ``store`` overrides the spec's store URL. Chunks already marked done are
    skipped. Reducers the spec enables run afterwards when the sweep is complete.
    Raises :class:`~cluster.storage.StoreError` before starting Ray when the
    store cannot be opened or the run exists with a different spec.
    """
    import ray

    from .lock import RunLock

    # Workers run in other directories: a relative local store means the driver's cwd.
    spec = spec.with_store(str(parse_store_url(store if store is not None else spec.store)))
    _precheck(spec, s3_endpoint)
    env = _worker_env(s3_endpoint)
    started_ray = init_ray(address, env)
    pool = lock = None
    try:
        pool = _Pool(spec, _n_workers(spec), env, s3_endpoint)
        plans = plan_groups(spec, pool)  # loads each generator once: bad options fail here, nothing written
        rs = RunStore(spec.store, s3_endpoint=s3_endpoint)
        lock = RunLock(spec.store, spec.name, s3_endpoint=s3_endpoint).acquire()
        rs.create(spec.name, spec, [p for _, _, p in plans])
        masks = [rs.done_mask(spec.name, plan.key) for _, _, plan in plans]
        total_chunks = sum(p.n_chunks for _, _, p in plans)
        pending = sum(int((~m).sum()) for m in masks)
        points = sum(len(range(plan.n)[plan.rows(i)]) for (_, _, plan), m in zip(plans, masks)
                     for i in range(plan.n_chunks) if not m[i])
        t0, started = time.time(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rs.update_attrs(spec.name, status="running", failed=[])
        with _progress_bar(points, progress) as bar:
            computed, failed, retries = _schedule(pool, _pending(spec, plans, masks), bar, max_attempts)
        seconds = time.time() - t0
        status = "complete" if not failed else "partial"
        timing = {"started": started, "seconds": round(seconds, 3), "chunks_computed": computed,
                  "points": points, "points_per_second": round(points / seconds, 3) if seconds > 0 else None}
        rs.update_attrs(spec.name, status=status, failed=failed, timing=timing)
        summary = {"run": spec.name, "store": rs.url, "status": status, "chunks": total_chunks,
                   "skipped": total_chunks - pending, "computed": computed, "failed": failed,
                   "workers": len(pool.actors), "workers_replaced": pool.replaced,
                   "store_retries": retries + rs.retry.retries,
                   "lock_taken_over": lock.took_over is not None,
                   "groups": [p.key for _, _, p in plans], **timing}
        pool.close()  # free the workers' CPUs/GPUs: reducer tasks need them
        pool = None
        summary["reduce"] = _reduce(rs, spec, progress) if status == "complete" else None
        return summary
    finally:
        if lock is not None:
            lock.release()
        if pool is not None:
            pool.close()
        if started_ray:
            ray.shutdown()


def _reduce(rs: RunStore, spec, progress: bool = False) -> dict | None:
    """The spec's reducers over the finished run (on the Ray instance already running)."""
    chosen = tuple(k for k, on in spec.reducers.items() if on)
    if not chosen:
        return None
    from cluster.reduce import reduce_run

    return reduce_run(rs.root, spec.name, reducers=chosen, use_ray=True,
                      progress=progress and sys.stderr.isatty())


def resume_sweep(run: str, *, store: str | None = None, address: str | None = None,
                 s3_endpoint: str | None = None, progress: bool = True, allow_import: bool = False) -> dict:
    """Finish run ``run`` from the spec stored in its attributes (only chunks without done).

    The stored spec is validated like a spec file; an import path in it runs only
    with ``allow_import=True`` from the caller (:mod:`cluster.trust`).
    """
    from cluster.spec import parse_spec

    rs = RunStore(store, s3_endpoint=s3_endpoint, create=False)
    raw = rs.attrs(run).get("spec")
    if not isinstance(raw, dict):
        raise StoreError(f"run {run!r} in {rs.url} has no stored spec to resume from")
    raw = gate_stored_spec(raw, run=run, allow_import=allow_import)
    return run_sweep(parse_spec(raw), address=address, store=rs.url, s3_endpoint=s3_endpoint,
                     progress=progress)
