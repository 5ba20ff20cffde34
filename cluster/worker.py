"""The sweep worker: one per GPU (or CPU slot); loads a generator once, serves many chunks.

Example (the driver does this)::

    import ray
    from cluster.worker import SweepWorker, worker_options
    Actor = ray.remote(SweepWorker).options(**worker_options(gpus=0, cpus=1))
    w = Actor.remote("./gangeo-results", threads=1)
    status = ray.get(w.compute.remote(task))   # a ChunkTask in; {"keys", "chunk", "ok", "failed", "seconds", ...} out

The worker computes ``metric_tensor`` and ``eigen`` for a chunk's codes, writes
the chunk to the store itself and its ``done`` entry last, and returns only a
small status record. A task may carry several targets of one (generator, space)
for the same chunk: with ``method: exact`` they share one forward-mode pass of the
generator (``geometry_core.metric.metric_tensors``), and each target's group chunk
is written and marked done on its own. A chunk draws only its own codes from the spec's seed
(:func:`cluster.codes.seed_codes`), or gets them in its task when they come from a
file, so a recomputed chunk is identical to a lost one.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .codes import DEFAULT_SCHEME, seed_codes
from .layout import GroupLayout
from .lock import pid_alive
from .retry import retry_call
from .s3_checkpoints import local_options
from .store import RunStore

__all__ = ["ERROR_CHARS", "ChunkTask", "SweepWorker", "chunk_codes", "compute_chunk", "compute_chunks",
           "whole_sentences", "worker_options"]


def worker_options(*, gpus: float = 0, cpus: float = 1, max_restarts: int = 2) -> dict:
    """Ray actor options: ``num_gpus`` when GPUs are used, else ``num_cpus``; restartable."""
    opts: dict = {"max_restarts": max_restarts, "max_task_retries": 0}
    if gpus:
        opts.update(num_gpus=gpus, num_cpus=cpus or 0)
    else:
        opts["num_cpus"] = cpus
    return opts


@dataclass(frozen=True)
class ChunkTask:
    """One chunk of one or more groups, as the driver hands it to a worker (small: pickled per task).

    ``layouts``: the groups (targets) of one (generator, space) whose chunk ``chunk``
    this task computes; they share ``n``, ``dim`` and ``chunk_size``, hence the codes.
    A single :class:`GroupLayout` is taken as a one-group task. ``generator`` is the
    registry name (``layout.model`` is the group's label); ``driver`` is the
    (host, pid) of the driver, so a worker never writes for a dead one.
    """

    run: str
    layouts: tuple[GroupLayout, ...]
    chunk: int
    generator: str
    options: dict
    seed: int
    method: str
    topk: int | None
    driver: tuple[str, int] = field(default_factory=lambda: (socket.gethostname(), os.getpid()))
    scheme: str = DEFAULT_SCHEME         # how codes are drawn from the seed (cluster.codes)
    codes: np.ndarray | None = None      # the chunk's codes, when they come from a file

    def __post_init__(self) -> None:
        if isinstance(self.layouts, GroupLayout):
            object.__setattr__(self, "layouts", (self.layouts,))
        sizes = {(lay.n, lay.dim, lay.chunk_size) for lay in self.layouts}
        if len(sizes) != 1:
            raise ValueError(f"a chunk task's groups must share n, dim and chunk size, got {sorted(sizes)}")

    @property
    def layout(self) -> GroupLayout:
        """The first group's layout (every group's codes are the same)."""
        return self.layouts[0]

    @property
    def key(self) -> str:
        return self.layout.key

    @property
    def keys(self) -> list[str]:
        return [lay.key for lay in self.layouts]

    @property
    def rows(self) -> slice:
        return self.layout.rows(self.chunk)

    def only(self, layouts) -> "ChunkTask":
        """The same chunk for ``layouts`` (a subset of this task's groups) only."""
        return replace(self, layouts=tuple(layouts))


def chunk_codes(G, task: ChunkTask) -> torch.Tensor:
    """The chunk's codes (CPU float32): from the task when they come from a file, else drawn from the seed."""
    if task.codes is not None:
        return torch.from_numpy(np.asarray(task.codes, dtype=np.float32))
    return seed_codes(G, task.seed, task.rows, n=task.layout.n, scheme=task.scheme)


def compute_chunks(G, distances: dict, task: ChunkTask) -> dict[str, dict[str, torch.Tensor]]:
    """Per group key of ``distances`` ({key: Distance}): the chunk's arrays as :func:`compute_chunk` gives them.

    With ``method: exact`` and several targets, one forward-mode pass of ``G``
    serves them all (``metric_tensors``); other methods compute target by target.
    """
    from geometry_core.metric import metric_tensor, metric_tensors
    from geometry_core.spectrum import eigen

    z = chunk_codes(G, task)
    zd = z.to(G.device)
    if task.method == "exact" and len(distances) > 1:
        Hs = metric_tensors(G, distances, zd)
    else:
        Hs = {key: metric_tensor(G, d, zd, method=task.method, topk=task.topk) for key, d in distances.items()}
    out = {}
    for key, H in Hs.items():
        eigvals, eigvecs = eigen(H)
        arrays = {name: t.detach().to("cpu", torch.float32) for name, t in (("z", z), ("eigvecs", eigvecs),
                                                                             ("hessian", H))}
        arrays["eigvals"] = eigvals.detach().to("cpu", torch.float64)
        out[key] = arrays
    return out


def compute_chunk(G, distance, task: ChunkTask) -> dict[str, torch.Tensor]:
    """z, eigvecs and hessian (CPU float32) and eigvals (float64, as decomposed) of one chunk's codes."""
    return compute_chunks(G, {task.key: distance}, task)[task.key]


class SweepWorker:
    """Holds one generator (and its distances) and a store handle; computes chunks."""

    def __init__(self, store_url: str, *, s3_endpoint: str | None = None, threads: int | None = None,
                 device: str | None = None) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._store_args = (store_url, s3_endpoint)
        self._store: RunStore | None = None  # opened on first write: planning needs no store
        self._gen_key: tuple | None = None
        self._G = None
        self._distances: dict[str, torch.nn.Module] = {}
        self.model_loads = 0  # generators loaded over this worker's life: one per switch of model
        self.chunks = 0  # chunks computed and marked done by this worker

    @property
    def store(self) -> RunStore:
        if self._store is None:
            url, endpoint = self._store_args
            self._store = retry_call(lambda: RunStore(url, s3_endpoint=endpoint, create=False),
                                     what=f"open {url}")
        return self._store

    def _retries(self) -> int:
        return self._store.retry.retries if self._store is not None else 0

    def pid(self) -> int:
        return os.getpid()

    def _load(self, model: str, space: str, options: dict, target: str | None):
        import geometry_core

        key = (model, space, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key != self._gen_key:  # one generator at a time: a GPU holds one model
            self._G, self._distances, self._gen_key = None, {}, None
            self._G = geometry_core.load_generator(model, space=space, device=self.device,
                                                   **local_options(options))
            self._gen_key = key
            self.model_loads += 1
        if target is not None and target not in self._distances:
            self._distances[target] = geometry_core.load_distance(target, generator=self._G, device=self.device)
        return self._G, self._distances.get(target)  # type: ignore[arg-type]  # get(None) is None; typeshed wants a str

    def info(self) -> dict:
        """Where this worker runs (Ray node id and address too), how many generators it has loaded and
        how many chunks it computed (for the run summary)."""
        import ray

        name = torch.cuda.get_device_name(self.device) if self.device.startswith("cuda") else "cpu"
        return {"pid": os.getpid(), "host": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id(),
                "node_ip": ray.util.get_node_ip_address(), "device": self.device, "device_name": name,
                "model_loads": self.model_loads, "chunks": self.chunks}

    def describe(self, model: str, space: str, options: dict, layers: tuple[str, ...] = ()) -> dict:
        """Latent size and layer names of a generator (for planning a sweep); ``missing``: which of
        ``layers`` it does not have."""
        G, _ = self._load(model, space, options, None)
        modules = {name for name, _ in G.module.named_modules()} if layers else set()
        return {"dim": int(G.latent_dim), "layers": list(G.layer_names),
                "missing": [name for name in layers if name not in modules]}

    def check_distances(self, model: str, space: str, options: dict, distances: tuple[str, ...]) -> None:
        """Load each of ``distances`` as a chunk would, so one that cannot load on this worker
        (an LPIPS trunk absent offline) fails planning, before the run exists."""
        for name in distances:
            self._load(model, space, options, name)

    def write(self, task: ChunkTask, arrays: dict[str, torch.Tensor], seconds: float) -> None:
        """Write one group's chunk (``task`` has one group): its arrays and records (whole Zarr chunks)."""
        self.store.write_chunk(task.run, task.key, task.chunk, {k: v.numpy() for k, v in arrays.items()},
                               seconds=seconds)

    def mark_done(self, task: ChunkTask) -> None:
        """Write one group's done entry (``task`` has one group), last: from now on it counts."""
        self.store.mark_done(task.run, task.key, task.chunk)

    def compute(self, task: ChunkTask) -> dict:
        """Compute, write and mark the chunk of each of the task's groups; never raises.

        The record: ``ok`` when every group's chunk is done; ``failed``, {group key:
        error} of those that are not (a group whose write fails leaves the others
        written); ``seconds`` for the whole task. Each group's stored ``seconds`` is
        its share of the shared computation.
        """
        t0 = time.perf_counter()
        record = {"key": task.key, "keys": task.keys, "chunk": task.chunk, "pid": os.getpid()}
        retries0 = self._retries()
        failed: dict[str, str] = {}
        try:
            G, _ = self._load(task.generator, task.layout.space, task.options, None)
            distances = {lay.key: self._load(task.generator, lay.space, task.options, lay.target)[1]
                         for lay in task.layouts}
            results = compute_chunks(G, distances, task)
            seconds = (time.perf_counter() - t0) / len(task.layouts)
            _check_driver(task)
        except Exception as exc:  # reported per group; the driver retries or gives up
            failed = dict.fromkeys(task.keys, _error(exc))
        else:
            for lay in task.layouts:
                one = task.only([lay])
                try:
                    self.write(one, results[lay.key], seconds)
                    self.mark_done(one)
                    self.chunks += 1
                except Exception as exc:
                    failed[lay.key] = _error(exc)
        return {**record, "ok": not failed, "failed": failed, "seconds": time.perf_counter() - t0,
                "error": next(iter(failed.values()), None), "store_retries": self._retries() - retries0}


def _error(exc: Exception) -> str:
    """One line for a failed chunk: the exception's type, its message in whole sentences, where it was raised."""
    last = traceback.extract_tb(exc.__traceback__)[-1:]
    where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    msg = whole_sentences(" ".join(str(exc).split()), ERROR_CHARS)
    return f"{type(exc).__name__}: {msg}{where}"


# A failed chunk's message is kept in the run's attributes: bounded, but cut only between sentences.
ERROR_CHARS = 2000


def whole_sentences(text: str, limit: int) -> str:
    """``text`` when it fits in ``limit`` characters, else its longest prefix ending a sentence or clause."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = max(head.rfind(". "), head.rfind("; "))
    kept = head[: cut + 1] if cut > 0 else head[: head.rfind(" ")] if " " in head else ""
    return f"{kept} [{len(text) - len(kept)} more characters left out]"


def _check_driver(task: ChunkTask) -> None:
    """Refuse to write for a driver that died on this host: its run may be resumed by another."""
    host, pid = task.driver
    if host == socket.gethostname() and not pid_alive(int(pid)):
        raise RuntimeError(f"driver pid {pid} is gone; chunk {task.chunk} not written")
