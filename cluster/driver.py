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
The steps, in order: :func:`_precheck`, :class:`_Pool`, :func:`plan_groups`,
:func:`_open_groups`, :class:`~cluster.scheduler.ChunkScheduler`, :func:`_summary`, :func:`_reduce`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

from geometry_core.errors import GeometryError, WeightsError

from .bounds import check_before_ray, check_plan, check_resources, targets_per_task
from .codes import DEFAULT_SCHEME, file_rows
from .finished import finished_summary
from .growth import code_scheme, grow_run, plan_growth, resume_spec
from .integrity import reduce_state
from .layout import GroupLayout
from .lock import RunLock, RunLockedError
from .progress import SweepProgress
from .ray_runtime import check_cluster_address, init_ray
from .run_state import attempt_attrs, live_driver
from .scheduler import ChunkScheduler, Outcome
from .spec import ALL_LAYERS, GeneratorSpec, SpecError, SweepSpec, parse_spec
from .states import Status
from .storage import StoreError, StoreURL, check_store, parse_store_url, store_env, writable_problem
from .store import RunStore, check_identity
from .trust import gate_stored_spec
from .worker import ChunkTask, SweepWorker, worker_options

__all__ = ["plan_groups", "resume_sweep", "run_sweep"]

MAX_ATTEMPTS = 3

Plan = list[tuple[GeneratorSpec, GroupLayout]]


def _n_workers(spec: SweepSpec) -> int:
    import ray

    res = spec.resources
    if res["workers"]:
        return int(res["workers"])
    total = ray.cluster_resources()
    if res["gpus_per_worker"]:
        return max(1, int(total.get("GPU", 0) // res["gpus_per_worker"]))
    return max(1, int(total.get("CPU", 1) // max(res["cpus_per_worker"], 1e-9)))


class _Pool:
    """Worker actors by slot; a dead one is replaced in its slot."""

    def __init__(self, spec: SweepSpec, n: int, env: dict, s3_endpoint: str | None, worker_cls=SweepWorker) -> None:
        import ray

        res = spec.resources
        gpus = res["gpus_per_worker"]
        self._cls = ray.remote(worker_cls).options(
            **worker_options(gpus=gpus, cpus=res["cpus_per_worker"]), runtime_env={"env_vars": env})
        self._args = (spec.store,)
        self._kwargs = {"s3_endpoint": s3_endpoint, "threads": max(1, int(res["cpus_per_worker"])),
                        "device": "cuda" if gpus else "cpu"}
        self.actors = [self._new() for _ in range(n)]
        self.replaced = 0
        self.wait_s: float | None = None  # how long planning waits for the first worker (None: no limit)

    def _new(self):
        return self._cls.remote(*self._args, **self._kwargs)

    def replace(self, slot: int, dead) -> None:
        import ray

        if self.actors[slot] is dead:
            ray.kill(dead, no_restart=True)
            self.actors[slot] = self._new()
            self.replaced += 1

    def info(self, skip=(), timeout: float = 30.0) -> list[dict]:
        """Each worker's node, device, model loads and chunks (SweepWorker.info), asked all at once.

        Workers in ``skip`` (slots the scheduler saw not running: one waiting for a node
        with room since its own was lost), one that has not answered within ``timeout``
        s in all, or one that died are each one ``error`` entry.
        """
        import ray

        refs = {slot: a.info.remote() for slot, a in enumerate(self.actors) if slot not in skip}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout) if refs else ([], [])
        out = []
        for slot in range(len(self.actors)):
            ref = refs.get(slot)
            try:
                out.append(ray.get(ref) if ref is not None and ref in ready else
                           {"error": "not running: no node has room for it"})
            except Exception as exc:  # a worker lost at the very end costs the summary one entry
                out.append({"error": f"{type(exc).__name__}"})
        return out

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)


def plan_groups(spec: SweepSpec, pool: _Pool) -> Plan:
    """(generator spec, group layout) for every (model, space, target) of the spec.

    Raises :class:`~cluster.spec.SpecError` when a target, ``topk`` or the
    run's size does not fit the generators (:func:`cluster.bounds.check_plan`).
    """
    out, seen = [], []
    for i, gen in enumerate(spec.generators):
        for space in gen.spaces:
            info = _describe(pool, gen, space, spec.targets)
            if i == 0 and space == gen.spaces[0]:  # image distances do not depend on the generator
                _check_distances(pool, gen, space, spec.targets)
            targets = []
            for t in spec.targets:
                targets += [f"layer:{n}" for n in info["layers"]] if t == ALL_LAYERS else [t]
            for t in dict.fromkeys(targets):
                out.append((gen, GroupLayout(gen.label, space, t, spec.n_codes, info["dim"], spec.chunk_size)))
                seen.append((out[-1][1].key, info["dim"], t, info.get("missing", [])))
    check_plan(spec, seen)
    wrong = sorted({f"{key} ({dim}-d)" for key, dim, _, _ in seen if spec.codes_dim not in (None, dim)})
    if wrong:
        raise SpecError([f"codes.file: {spec.codes_file} holds {spec.codes_dim}-d codes; expected the latent "
                         f"size of every group: {', '.join(wrong)}"])
    return out


def _describe(pool: _Pool, gen: GeneratorSpec, space: str, targets: tuple[str, ...] = ()) -> dict:
    """The worker's description of a generator; a load failure becomes one line of its kind."""
    layers = tuple(t[len("layer:"):] for t in targets if t.startswith("layer:"))
    return _ask(pool, f"generator {gen.name!r} ({space})", "describe", gen.name, space, dict(gen.options), layers)


def _check_distances(pool: _Pool, gen: GeneratorSpec, space: str, targets: tuple[str, ...]) -> None:
    """Every image distance of the spec loads on a worker (weights present or fetchable), before the run exists."""
    for t in targets:
        if t != ALL_LAYERS and not t.startswith("layer:"):
            _ask(pool, f"targets: {t}", "check_distances", gen.name, space, dict(gen.options), (t,))


def _ask(pool: _Pool, what: str, method: str, *args):
    """``method(*args)`` on the first worker; its failure becomes one line of its kind, naming ``what``."""
    import ray

    try:
        return ray.get(getattr(pool.actors[0], method).remote(*args), timeout=pool.wait_s)
    except ray.exceptions.GetTimeoutError:
        raise SpecError([f"resources: no worker for {what} started within {NODE_WAIT_S:.0f} s; "
                         "does any node have the CPUs/GPUs resources asks for?"]) from None
    except Exception as exc:  # RayTaskError wraps the worker's exception (multi-line traceback)
        cause = getattr(exc, "cause", None) or exc
        text = str(cause).strip().splitlines()
        if isinstance(cause, GeometryError) and text:  # weights keep their kind (and exit code)
            kind = type(cause) if isinstance(cause, WeightsError) else GeometryError
            raise kind(f"{what}: {' '.join(text[0].split())}") from None
        raise GeometryError(f"{what}: {type(cause).__name__}: " + (text[-1] if text else "")) from None


# How long a worker may wait for a node on an existing cluster (an autoscaler may add one).
NODE_WAIT_S = 600.0


def _check_nodes(spec: SweepSpec, *, embedded: bool) -> float | None:
    """A worker must fit on a node: embedded, refuse at once; on a cluster, say that it waits, and how long.

    Returns the time to wait for the first worker (None: no limit, a node fits).
    """
    import ray

    try:
        check_resources(spec, ray.nodes())
        return None
    except SpecError as exc:
        if embedded:
            raise
        print(f"gangeo: {exc}; waiting up to {NODE_WAIT_S:.0f} s for the cluster to add one", file=sys.stderr)
        return NODE_WAIT_S


def _pending(spec: SweepSpec, plans: Plan, masks, scheme: str) -> Iterator[ChunkTask]:
    """Chunk tasks of every chunk without done, generated lazily; codes from a file travel in their task.

    With ``method: exact`` one task carries every target of a (generator, space) whose
    chunk is not done (up to :func:`cluster.bounds.targets_per_task`), so they share one
    pass of the generator; other methods get one task per group chunk.
    """
    sets: dict[tuple, list] = {}  # (label, space, n, dim, chunk size) -> [(gen, layout, mask)], in plan order
    for (gen, lay), mask in zip(plans, masks):
        sets.setdefault((gen.label, lay.space, lay.n, lay.dim, lay.chunk_size), []).append((gen, lay, mask))
    for members in sets.values():
        gen, first, _ = members[0]
        per_task = targets_per_task(spec, first.dim) if spec.method == "exact" else 1
        for chunk in range(first.n_chunks):
            todo = [lay for _, lay, mask in members if not mask[chunk]]
            if not todo:
                continue
            codes = file_rows(spec.codes_file, first.rows(chunk)) if spec.codes_file else None
            for i in range(0, len(todo), per_task):
                yield ChunkTask(spec.name, tuple(todo[i : i + per_task]), chunk, gen.name, dict(gen.options),
                                spec.seed, spec.method, spec.topk, scheme=scheme, codes=codes)


def _precheck(spec: SweepSpec, loc: StoreURL, s3_endpoint: str | None) -> None:
    """Fail fast, before Ray starts and without writing: store reachable, same spec, no live driver."""
    check_store(loc, s3_endpoint=s3_endpoint)
    if loc.kind == "local":
        _check_writable(loc.path)
    if loc.kind == "local" and not os.path.isdir(loc.path):
        return  # a new store: nothing to compare with
    try:
        rs = RunStore(loc, s3_endpoint=s3_endpoint, mode="r", create=False)
    except StoreError:
        return  # an empty S3 prefix: created later
    if not rs.has_run(spec.name):
        return
    plan_growth(spec.name, rs.url, rs.attrs(spec.name), spec)  # raises RunExistsError unless same or grown
    info = live_driver(rs, spec.name)
    if info is not None:
        raise RunLockedError(f"run {spec.name!r} is being written by another driver (host {info.get('host')}, "
                             f"pid {info.get('pid')}); wait for it to finish")


def _check_writable(path: str) -> None:
    """A local store (or, new, the directory it will be made in) must take files."""
    problem = writable_problem(path)
    if problem is not None:
        suggestion = "choose another --store" if "not a directory" in problem else "choose a writable --store"
        raise StoreError(f"store {path}: {problem}; {suggestion}")


def _open_groups(rs: RunStore, spec: SweepSpec, plans: Plan) -> list:
    """Create, reopen or grow the run's groups; the mask of chunks that count as done in each group.

    A done chunk counts only when its data and checksum agree; a damaged one loses
    its ``done`` entry here, so it is recomputed and never read meanwhile.
    """
    from .view import damaged_chunks
    from .weights_identity import weights_digests

    layouts, weights = [lay for _, lay in plans], weights_digests(spec)
    if rs.has_run(spec.name):
        _grow_if_asked(rs, spec, layouts, weights)
    if rs.create(spec.name, spec, layouts, weights=weights):
        rs.update_attrs(spec.name, code_scheme=DEFAULT_SCHEME)  # how its codes are drawn (cluster.codes)
    masks = []
    for _, lay in plans:
        mask = rs.done_mask(spec.name, lay.key)
        bad = damaged_chunks(rs.group(spec.name, lay.key), lay, mask)
        for chunk, problem in sorted(bad.items()):
            print(f"gangeo: recomputing chunk {chunk} of {lay.key}: {problem}", file=sys.stderr)
            rs.mark_done(spec.name, lay.key, chunk, value=0)
            mask[chunk] = False
        if bad and reduce_state(rs.group(spec.name, lay.key)) is not None:
            rs.group(spec.name, lay.key)["reduce"].attrs["state"] = "reducing"  # reduced from data now replaced
        masks.append(mask)
    return masks


def _grow_if_asked(rs: RunStore, spec: SweepSpec, layouts: list[GroupLayout], weights: dict) -> None:
    """Grow the run when ``spec`` asks more codes (:mod:`cluster.growth`), checked again under the run lock."""
    attrs = rs.attrs(spec.name)
    old_n = plan_growth(spec.name, rs.url, attrs, spec)
    if old_n is None:
        return
    old_w = (attrs.get("identity") or {}).get("weights")
    if old_w:  # the same weights files, checked before anything is resized
        check_identity(spec.name, rs.url, {**spec.identity(), "weights": old_w},
                       {**spec.identity(), "weights": weights})
    print(f"gangeo: run {spec.name!r} grows from {old_n} to {spec.n_codes} codes", file=sys.stderr)
    grow_run(rs, spec, layouts, old_n)


def _points(plans: Plan, masks) -> int:
    """Codes of the chunks still to compute (the progress bar's total)."""
    return sum(lay.n_rows(c) for (_, lay), m in zip(plans, masks) for c in range(lay.n_chunks) if not m[c])


def _summary(spec: SweepSpec, rs: RunStore, plans: Plan, masks, outcome: Outcome, timing: dict, pool: _Pool,
             lock: RunLock) -> dict:
    total = sum(lay.n_chunks for _, lay in plans)
    pending = sum(int((~m).sum()) for m in masks)
    return {"run": spec.name, "store": rs.url, "status": Status.PARTIAL if outcome.failed else Status.COMPLETE,
            "chunks": total, "skipped": total - pending, "computed": outcome.computed, "failed": outcome.failed,
            "workers": len(pool.actors), "workers_replaced": pool.replaced,
            "store_retries": outcome.store_retries + rs.retry.retries, "lock_taken_over": lock.took_over is not None,
            "groups": [lay.key for _, lay in plans], **timing}


def _execute(spec: SweepSpec, rs: RunStore, pool: _Pool, plans: Plan, masks, *, progress: SweepProgress,
             max_attempts: int) -> tuple[Outcome, dict]:
    """Compute every pending chunk; the run's status, failures and this attempt go to its attributes.

    The attempt is appended to the run's history (:func:`cluster.run_state.attempt_attrs`) as
    ``running`` first, so an attempt whose driver dies still shows.
    """
    points = _points(plans, masks)
    pending = sum(int((~m).sum()) for m in masks)
    t0, started = time.time(), _utc()
    attempt = {"started": started, "status": Status.RUNNING, "codes": spec.n_codes, "points": points,
               "chunks_skipped": sum(lay.n_chunks for _, lay in plans) - pending}
    attrs = rs.attrs(spec.name)
    rs.update_attrs(spec.name, status=Status.RUNNING, failed=[], **attempt_attrs(attrs, attempt))
    scheme = code_scheme(attrs)
    with progress.computing(chunks=pending, codes=points, done_before=sum(int(m.sum()) for m in masks),
                            workers=len(pool.actors)) as bar:
        outcome = ChunkScheduler(pool, bar, max_attempts).run(_pending(spec, plans, masks, scheme))
    seconds = time.time() - t0
    timing = {"started": started, "seconds": round(seconds, 3), "chunks_computed": outcome.computed,
              "points": points, "points_per_second": round(points / seconds, 3) if seconds > 0 else None}
    # With reducers to run, "complete" waits for their completion records (run_sweep).
    ended = Status.PARTIAL if outcome.failed else Status.COMPLETE
    final = Status.REDUCING if ended == Status.COMPLETE and any(spec.reducers.values()) else ended
    done = {**attempt, "finished": _utc(), "seconds": round(seconds, 3), "chunks_computed": outcome.computed,
            "chunks_failed": len(outcome.failed), "status": ended}
    rs.update_attrs(spec.name, status=final, failed=outcome.failed,
                    **attempt_attrs(rs.attrs(spec.name), done, replace_last=True))
    return outcome, timing


def _record_attempt(rs: RunStore, run: str, *, status: str | None = None, **facts) -> None:
    """Add ``facts`` to the run's latest attempt (and set its ``status``, if given), in one write."""
    extra = {"status": status} if status is not None else {}
    rs.update_attrs(run, **extra, **attempt_attrs(rs.attrs(run), facts, replace_last=True))


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_sweep(spec: SweepSpec, *, address: str | None = None, store: str | None = None,
              s3_endpoint: str | None = None, progress: bool = True, max_attempts: int = MAX_ATTEMPTS,
              worker_cls: type = SweepWorker) -> dict:
    """Run (or resume) the sweep ``spec``; returns a summary dict (status, chunks, failed, timing).

    ``store`` overrides the spec's store URL. Chunks already marked done are
    skipped. Reducers the spec enables run afterwards when the sweep is complete.
    ``worker_cls``: the worker actor's class (a subclass of :class:`SweepWorker`).
    Raises :class:`~cluster.storage.StoreError` before starting Ray when the
    store cannot be opened or the run exists with a different spec. A run already
    complete and reduced with this identity is answered from the store without
    starting Ray (:mod:`cluster.finished`).
    """
    # Workers run in other directories: a relative local store means the driver's cwd.
    loc = parse_store_url(store if store is not None else spec.store)  # the one parse of the store location
    spec = spec.with_store(str(loc))
    check_cluster_address(address)  # a job server URL: one line, before the first progress line
    _precheck(spec, loc, s3_endpoint)
    prog = SweepProgress(spec.name, enabled=progress)
    finished = finished_summary(spec, s3_endpoint, loc=loc)  # a finished run answers from the store: no Ray, no model
    if finished is not None:
        prog.say("complete and reduced with this spec; nothing to do")
        return finished
    # Layer names, a codes file's width, distances (on this machine when Ray is embedded): no worker needed.
    check_before_ray(spec, distances=address is None)
    import ray  # seconds to import: not for a finished run or a refused spec

    prog.starting(spec, address=address)  # before Ray and the workers: they take a while to start
    env = store_env(s3_endpoint)
    started_ray = init_ray(address, env)
    pool = lock = None
    try:
        wait_s = _check_nodes(spec, embedded=address is None)
        pool = _Pool(spec, _n_workers(spec), env, s3_endpoint, worker_cls)
        pool.wait_s = wait_s
        plans = plan_groups(spec, pool)  # loads each generator once: bad options fail here, nothing written
        rs = RunStore(loc, s3_endpoint=s3_endpoint)
        lock = RunLock(loc, spec.name, s3_endpoint=s3_endpoint).acquire()
        masks = _open_groups(rs, spec, plans)
        outcome, timing = _execute(spec, rs, pool, plans, masks, progress=prog, max_attempts=max_attempts)
        summary = _summary(spec, rs, plans, masks, outcome, timing, pool, lock)
        summary["worker_info"] = pool.info(skip=outcome.idle_slots)
        _record_attempt(rs, spec.name, workers=summary["worker_info"])  # which node computed how many chunks
        pool.close()  # free the workers' CPUs/GPUs: reducer tasks need them
        pool = None
        nodes: dict[str, int]  # Ray node id -> reducer tasks that ran there
        summary["reduce_nodes"] = nodes = {}
        summary["reduce"] = _reduce(rs, spec, prog, nodes) if summary["status"] == Status.COMPLETE else None
        if summary["status"] == Status.COMPLETE:  # every reduce wrote its record
            _record_attempt(rs, spec.name, status=Status.COMPLETE, reduce_nodes=nodes)
        from .xr import consolidate_run  # end of the run: plain xarray opens each group in one read

        consolidate_run(rs.root, spec.name)
        return summary
    finally:
        if lock is not None:
            lock.release()
        if pool is not None:
            pool.close()
        if started_ray:
            ray.shutdown()


def _reduce(rs: RunStore, spec: SweepSpec, progress: SweepProgress | None = None,
            nodes: dict | None = None) -> dict | None:
    """The spec's reducers over the finished run (on the Ray instance already running).

    ``nodes``, if given, receives Ray node id -> reducer tasks run there.
    """
    chosen = tuple(k for k, on in spec.reducers.items() if on)
    if not chosen:
        return None
    from .executor import RayExecutor
    from .reduce import reduce_run

    say = progress.say if progress is not None else (lambda _: None)
    t0 = time.perf_counter()
    say(f"reducing: {', '.join(chosen)}")  # off a terminal the tiles' bar is silent: one line each way
    ex = RayExecutor()
    # Groups whose reduce already covers every chunk keep it (a run grown by new checkpoints).
    out = reduce_run(rs.root, spec.name, reducers=chosen, use_ray=True, ex=ex, stale_only=True,
                     progress=progress is not None and progress.enabled and progress.tty)
    say(f"reduced {len(out)} group{'s' * (len(out) != 1)} in {time.perf_counter() - t0:.1f} s")
    if nodes is not None:
        nodes.update(ex.placement)
    return out


def resume_sweep(run: str, *, store: str | None = None, address: str | None = None,
                 s3_endpoint: str | None = None, progress: bool = True, allow_import: bool = False) -> dict:
    """Finish run ``run`` from the spec stored in its attributes (only chunks without done).

    The stored spec is validated like a spec file; an import path in it runs only
    with ``allow_import=True`` from the caller (:mod:`cluster.trust`).
    """
    rs = RunStore(store, s3_endpoint=s3_endpoint, create=False)
    raw = resume_spec(rs.attrs(run))  # a growth cut short: the spec it grows to, which finishes it
    if not isinstance(raw, dict):
        raise StoreError(f"run {run!r} in {rs.url} has no stored spec to resume from")
    raw = gate_stored_spec(raw, run=run, allow_import=allow_import)
    return run_sweep(parse_spec(raw), address=address, store=rs.url, s3_endpoint=s3_endpoint,
                     progress=progress)
