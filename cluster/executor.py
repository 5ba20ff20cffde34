"""Where the reducers' tasks run: in this process, or as Ray tasks (ARCHITECTURE.md, "Data path").

Example::

    ex = executor(use_ray=False)                    # or RayExecutor() on a running Ray
    ref = ex.put(big_object)                        # shared once with every task
    outs = ex.map(fn, [(ref, 0), (ref, 1)], desc="tiles")          # in order
    total = ex.tree_reduce(leaf, [(ref, a, b) for a, b in ranges], combine)

Both executors compute the same values in the same order (a tree reduction
combines pairwise, level by level, either way), so a reducer holds only its
mathematics and its results do not depend on where it ran.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

__all__ = ["Executor", "InProcess", "RayExecutor", "executor"]

# Ray tasks in flight at once: enough to keep a cluster busy, bounded for memory.
_WINDOW = 64


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", file=sys.stderr, disable=not progress, dynamic_ncols=True,
                leave=False)


class Executor:
    """map, put and tree-reduce; subclasses decide where the work runs.

    ``placement``: Ray node id -> tasks run there (empty in this process).
    """

    def __init__(self) -> None:
        self.placement: dict[str, int] = {}

    def put(self, obj: Any) -> Any:
        """A handle to ``obj`` that tasks receive in its place."""
        return obj

    def map(self, fn: Callable, args: Sequence[tuple], *, desc: str = "reduce", progress: bool = False) -> list:
        """``[fn(*a) for a in args]``, in order."""
        raise NotImplementedError

    def tree_reduce(self, leaf: Callable, args: Sequence[tuple], combine: Callable) -> Any:
        """``leaf(*a)`` for each ``a``, combined pairwise level by level (log2 depth); ``args`` not empty."""
        raise NotImplementedError


def _pairwise(nodes: list, combine: Callable) -> Any:
    while len(nodes) > 1:
        paired = [combine(nodes[k], nodes[k + 1]) for k in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            paired.append(nodes[-1])
        nodes = paired
    return nodes[0]


class InProcess(Executor):
    """Everything in this process, one task after another."""

    def map(self, fn, args, *, desc="reduce", progress=False) -> list:
        out = []
        with _bar(len(args), desc, progress) as bar:
            for a in args:
                out.append(fn(*a))
                bar.update(1)
        return out

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

    def __init__(self, *, num_cpus: float = 1, max_retries: int = 2) -> None:
        super().__init__()
        self._options = {"num_cpus": num_cpus, "max_retries": max_retries}

    def _count(self, nodes) -> None:
        for node in nodes:
            self.placement[node] = self.placement.get(node, 0) + 1

    def _remote(self, fn):
        import ray

        return ray.remote(**self._options)(fn)

    def put(self, obj):
        import ray

        return ray.put(obj)

    def map(self, fn, args, *, desc="reduce", progress=False) -> list:
        import ray

        remote = self._remote(_placed(fn))
        refs: list = []
        pending: list = []
        with _bar(len(args), desc, progress) as bar:
            for a in args:
                if len(pending) >= _WINDOW:
                    _, pending = ray.wait(pending, num_returns=1, fetch_local=False)
                    bar.update(1)
                refs.append(remote.remote(*a))
                pending.append(refs[-1])
            while pending:
                _, pending = ray.wait(pending, num_returns=1, fetch_local=False)
                bar.update(1)
        out = ray.get(refs)
        self._count(node for node, _ in out)
        return [value for _, value in out]

    def tree_reduce(self, leaf, args, combine):
        import ray

        remote_leaf, remote_combine = self._remote(_placed_leaf(leaf)), self._remote(_placed_combine(combine))
        nodes, value = ray.get(_pairwise([remote_leaf.remote(*a) for a in args], remote_combine.remote))
        self._count(nodes)
        return value


def executor(use_ray: bool) -> Executor:
    """The executor for ``use_ray``: Ray tasks (Ray must be initialised) or this process."""
    return RayExecutor() if use_ray else InProcess()
