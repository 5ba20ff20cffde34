"""Where the reducers' tasks run: in this process, or as Ray tasks (ARCHITECTURE.md, "Data path").

Example::

    ex = executor(use_ray=False)                    # or RayExecutor() on a running Ray
    ref = ex.put(big_object)                        # shared once with every task
    total = ex.tree_reduce(leaf, [(ref, a, b) for a, b in ranges], combine)
    stats = ex.fold(tile, iter(tile_args), add, 0, total=n, accelerated=True)   # tile(*a, device=...)

Both executors compute the same values in the same order (a tree reduction
combines pairwise, level by level, either way; a fold combines in the order of
its arguments), so a reducer holds only its mathematics and its results do not
depend on where it ran. ``accelerated=True`` tasks get a ``device`` keyword:
``"cuda"`` where the executor placed them on a GPU, else ``"cpu"``. The executor
decides: in this process, the GPU when torch sees one; as Ray tasks, a share of a
GPU when the cluster has any. ``device="cpu"`` keeps every task on the CPU.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any, Callable, Iterable, Sequence

__all__ = ["DEVICES", "Executor", "InProcess", "RayExecutor", "executor"]

# Ray tasks in flight at once: enough to keep a cluster busy, bounded for memory.
_WINDOW = 64
# Where accelerated tasks may run: "auto" (a GPU where there is one) or "cpu".
DEVICES = ("auto", "cpu")
# The share of one GPU an accelerated Ray task asks for: a few tasks per GPU overlap their
# store reads with each other's products.
_GPU_SHARE = 0.25


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", file=sys.stderr, disable=not progress, dynamic_ncols=True,
                leave=False)


class Executor:
    """put, tree-reduce and fold; subclasses decide where the work runs.

    ``placement``: Ray node id -> tasks run there (empty in this process).
    """

    placement: dict[str, int]
    device: str  # one of DEVICES; every subclass sets it

    def put(self, obj: Any) -> Any:
        """A handle to ``obj`` that tasks receive in its place."""
        return obj

    def tree_reduce(self, leaf: Callable, args: Sequence[tuple], combine: Callable) -> Any:
        """``leaf(*a)`` for each ``a``, combined pairwise level by level (log2 depth); ``args`` not empty."""
        raise NotImplementedError

    def fold(self, fn: Callable, args: Iterable[tuple], combine: Callable, initial: Any, *, total: int,
             desc: str = "reduce", progress: bool = False, accelerated: bool = False) -> Any:
        """``combine(...combine(combine(initial, fn(*a0)), fn(*a1))...)`` in the order of ``args``.

        ``args`` is consumed lazily and only a bounded window of results is held, so the
        caller's memory does not grow with the number of tasks (``total`` sizes the bar).
        ``accelerated``: ``fn`` also receives ``device=`` (module docstring).
        """
        raise NotImplementedError


def _pairwise(nodes: list, combine: Callable) -> Any:
    while len(nodes) > 1:
        paired = [combine(nodes[k], nodes[k + 1]) for k in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            paired.append(nodes[-1])
        nodes = paired
    return nodes[0]


def _check_device(device: str) -> str:
    if device not in DEVICES:
        from geometry_core.errors import GeometryError

        raise GeometryError(f"device must be one of {list(DEVICES)}, got {device!r}")
    return device


class InProcess(Executor):
    """Everything in this process, one task after another (on this process's GPU when ``device="auto"``)."""

    def __init__(self, *, device: str = "auto") -> None:
        self.placement = {}
        self.device = _check_device(device)

    def fold(self, fn, args, combine, initial, *, total, desc="reduce", progress=False, accelerated=False):
        kw = {}
        if accelerated:
            import torch

            kw["device"] = "cuda" if self.device == "auto" and torch.cuda.is_available() else "cpu"
        acc = initial
        with _bar(total, desc, progress) as bar:
            for a in args:
                acc = combine(acc, fn(*a, **kw))
                bar.update(1)
        return acc

    def tree_reduce(self, leaf, args, combine):
        return _pairwise([leaf(*a) for a in args], combine)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _placed(fn: Callable) -> Callable:
    """``fn`` that also says on which Ray node it ran: ``(node id, fn(*a))``."""
    def run(*a):
        return _node_id(), fn(*a)

    return run


def _placed_leaf(fn: Callable) -> Callable:
    """A tree leaf that carries the nodes of every task below it: ``([node id], fn(*a))``."""
    def run(*a):
        return [_node_id()], fn(*a)

    return run


def _placed_combine(fn: Callable) -> Callable:
    def run(left, right):
        return [*left[0], *right[0], _node_id()], fn(left[1], right[1])

    return run


class RayExecutor(Executor):
    """Ray tasks on the instance already initialised (see :mod:`cluster.ray_runtime`).

    Each task also returns its node's id: ``placement`` counts the tasks per node
    over this executor's life (where a run's reducer tasks went, for its summary).
    """

    def __init__(self, *, num_cpus: float = 1, max_retries: int = 2, device: str = "auto") -> None:
        self.placement = {}
        self._options = {"num_cpus": num_cpus, "max_retries": max_retries}
        self.device = _check_device(device)

    def _count(self, nodes) -> None:
        for node in nodes:
            self.placement[node] = self.placement.get(node, 0) + 1

    def _remote(self, fn, **extra):
        import ray

        return ray.remote(**self._options, **extra)(fn)

    def fold(self, fn, args, combine, initial, *, total, desc="reduce", progress=False, accelerated=False):
        import ray

        if accelerated:
            gpu = self.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0
            remote = self._remote(_placed(_on_task_device), **({"num_gpus": _GPU_SHARE} if gpu else {}))
            submit = lambda a: remote.remote(fn, *a)  # noqa: E731
        else:
            remote = self._remote(_placed(fn))
            submit = lambda a: remote.remote(*a)  # noqa: E731
        acc = initial

        def settle(ref):
            node, value = ray.get(ref)
            self._count([node])
            return combine(acc, value)

        pending: deque = deque()  # in submission order, at most _WINDOW: combined in order, as InProcess does
        with _bar(total, desc, progress) as bar:
            for a in args:
                if len(pending) >= _WINDOW:
                    acc = settle(pending.popleft())
                    bar.update(1)
                pending.append(submit(a))
            while pending:
                acc = settle(pending.popleft())
                bar.update(1)
        return acc

    def put(self, obj):
        import ray

        return ray.put(obj)

    def tree_reduce(self, leaf, args, combine):
        import ray

        remote_leaf, remote_combine = self._remote(_placed_leaf(leaf)), self._remote(_placed_combine(combine))
        nodes, value = ray.get(_pairwise([remote_leaf.remote(*a) for a in args], remote_combine.remote))
        self._count(nodes)
        return value


def _on_task_device(fn: Callable, *args) -> Any:
    """Run ``fn`` in a Ray task on the device Ray gave the task (a GPU when it was granted one)."""
    import ray
    import torch

    return fn(*args, device="cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")


def executor(use_ray: bool, *, device: str = "auto") -> Executor:
    """The executor for ``use_ray``: Ray tasks (Ray must be initialised) or this process."""
    return RayExecutor(device=device) if use_ray else InProcess(device=device)
