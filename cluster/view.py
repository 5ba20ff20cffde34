"""A read-only view of a finished (or partial) run: its target groups and the codes that count.

Example::

    from cluster.view import open_run
    run = open_run("./gangeo-results", "quickstart")
    for g in run.targets():                         # one per <model>/<space>/<target>
        lam = g.eigvals(0, g.layout.n, torch.float64)   # (used codes, D)
        H = g.hessians(0, 8, torch.float64)             # stored, or V diag(l) Vᵀ

Reducers, the report and the xarray access read a run through this module, so
"which codes are done" and "a metric from its eigen-decomposition" are decided
once (ARRAYS and chunk rows belong to :mod:`cluster.layout`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import zarr

from geometry_core.spectrum import from_eigen

from .layout import GroupLayout
from .storage import StoreError, subgroup

__all__ = ["DamagedChunkError", "GroupView", "RunView", "damaged_chunks", "find_target_groups", "open_run",
           "reduce_state", "require_reduced"]


def reduce_state(group: zarr.Group) -> str | None:
    """``complete``, ``unfinished`` (a reduce started and never wrote its record) or None (never reduced).

    Runs reduced before the record existed carry ``reduced_at``, written last, and read as complete.
    """
    if "reduce" not in set(group.group_keys()):
        return None
    a = dict(group["reduce"].attrs)
    if a.get("state", "complete" if a.get("reduced_at") or a.get("note") else None) == "complete":
        return "complete"
    return "unfinished"


def require_reduced(key: str, group: zarr.Group) -> None:
    """Raise :class:`StoreError` when the group's reduce started and never finished."""
    if reduce_state(group) == "unfinished":
        raise StoreError(f"group {key}: reduce/ is unfinished (interrupted or still running); "
                         "run `gangeo resume` or `gangeo reduce` to redo it")


class DamagedChunkError(StoreError):
    """A chunk marked done whose data or checksum disagree (ARCHITECTURE.md, "Store")."""


def damaged_chunks(group: zarr.Group, lay: GroupLayout, done: np.ndarray,
                   chunks: range | None = None) -> dict[int, str]:
    """{chunk: problem} of the done chunks (of ``chunks``, default all) that must not count."""
    from .verify import chunk_problems

    checksums = np.asarray(group["checksum"][:]) if "checksum" in set(group.array_keys()) else None
    out = {}
    for i in chunks if chunks is not None else range(lay.n_chunks):
        if not done[i]:
            continue
        problems = chunk_problems(group, lay, i, None if checksums is None else int(checksums[i]))
        if problems:
            out[i] = problems[0]
    return out


def refuse_damaged(key: str, damaged: dict[int, str]) -> None:
    """Raise :class:`DamagedChunkError` naming group, array(s) and chunk of the first damaged chunk."""
    if damaged:
        i = min(damaged)
        more = f" (and {len(damaged) - 1} more damaged chunks)" if len(damaged) > 1 else ""
        raise DamagedChunkError(f"group {key} chunk {i}: {damaged[i]}{more}; "
                                "run `gangeo resume` to recompute, or pass --skip-damaged")


@dataclass(frozen=True)
class GroupView:
    """One stored ``<model>/<space>/<target>`` group and which of its codes are done."""

    key: str  # path inside the run
    group: zarr.Group
    layout: GroupLayout
    used: np.ndarray  # (N,) bool: the code's chunk is done
    n_chunks_done: int
    arrays: frozenset
    damaged: tuple = ()  # (chunk, problem) of done chunks skipped because their data or checksum disagree

    @classmethod
    def of(cls, key: str, group: zarr.Group, *, skip_damaged: bool = False) -> "GroupView":
        """The group's view; a done chunk counts only when its data and checksum agree.

        A damaged done chunk raises :class:`DamagedChunkError` unless ``skip_damaged``,
        which leaves it out and lists it in ``damaged``.
        """
        names = frozenset(group.array_keys())
        missing = {"z", "eigvals", "done"} - names
        if missing:
            raise StoreError(f"group {group.path!r}: expected arrays z, eigvals, done; missing {sorted(missing)}")
        lay = GroupLayout.of(group)
        done = np.asarray(group["done"][:]) == 1
        bad = damaged_chunks(group, lay, done)
        if not skip_damaged:
            refuse_damaged(key, bad)
        done[list(bad)] = False
        return cls(key, group, lay, lay.codes_done(done), int(done.sum()), names, tuple(sorted(bad.items())))

    @property
    def has_hessian(self) -> bool:
        return "hessian" in self.arrays

    @property
    def has_eigvecs(self) -> bool:
        return "eigvecs" in self.arrays

    def _used(self, name: str, a: int, b: int, dtype) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.group[name][a:b])[self.used[a:b]]).to(dtype)

    def eigvals(self, a: int, b: int, dtype) -> torch.Tensor:
        """Eigenvalues (descending) of the used codes in rows [a, b)."""
        return self._used("eigvals", a, b, dtype)

    def hessians(self, a: int, b: int, dtype) -> torch.Tensor:
        """H of the used codes in rows [a, b); ``V diag(l) Vᵀ`` where the run kept no hessian."""
        if self.has_hessian:
            return self._used("hessian", a, b, dtype)
        return from_eigen(self.eigvals(a, b, dtype), self._used("eigvecs", a, b, dtype))

    def eigvecs(self, a: int, b: int, dtype) -> torch.Tensor:
        """Eigenvectors (columns, descending order) of the used codes in rows [a, b)."""
        if self.has_eigvecs:
            return self._used("eigvecs", a, b, dtype)
        from geometry_core.spectrum import eigen

        return eigen(self.hessians(a, b, dtype))[1]  # decomposed in float64 whatever dtype

    def spectra(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 ``(l, V)`` of the used codes in rows [a, b) with ``H = V diag(l) Vᵀ``.

        The stored eigenpairs; where the run kept no eigvecs, the float64 decomposition of the
        stored hessian (whose eigenvalues, unlike the stored ones, reproduce that hessian).
        """
        if self.has_eigvecs:
            return self.eigvals(a, b, torch.float64), self._used("eigvecs", a, b, torch.float64)
        from geometry_core.spectrum import eigen

        return eigen(self.hessians(a, b, torch.float64))

    def hessians_at(self, rows: np.ndarray) -> np.ndarray | None:
        """float64 H (len(rows), D, D) at the given code rows; None when the run kept neither H nor V."""
        def stack(name: str) -> torch.Tensor:
            return torch.from_numpy(np.stack([np.asarray(self.group[name][int(i)]) for i in rows])).double()

        if self.has_hessian:
            return stack("hessian").numpy()
        if self.has_eigvecs:
            vals = torch.from_numpy(np.asarray(self.group["eigvals"][:])[rows]).double()
            return from_eigen(vals, stack("eigvecs")).numpy()
        return None

    def reduced(self) -> dict[str, np.ndarray]:
        """The arrays of ``reduce/`` ({} when the run was not reduced)."""
        if "reduce" not in set(self.group.group_keys()):
            return {}
        require_reduced(self.key, self.group)
        red = self.group["reduce"]
        return {name: np.asarray(red[name][:]) for name in red.array_keys()}


def find_target_groups(run_group: zarr.Group) -> list[str]:
    """Paths (relative to the run) of the groups holding sweep arrays, sorted."""
    found = []

    def walk(g: zarr.Group, prefix: str) -> None:
        if "done" in set(g.array_keys()):
            found.append(prefix)
            return
        for name, sub in g.groups():
            if name != "reduce":
                walk(sub, f"{prefix}/{name}" if prefix else name)

    walk(run_group, "")
    return sorted(found)


@dataclass(frozen=True)
class RunView:
    """A run of a store, read-only in intent: its name, attributes and target groups."""

    name: str
    group: zarr.Group

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    def targets(self, *, skip_damaged: bool = False) -> list[GroupView]:
        """Every target group, sorted by key; a run without one is a :class:`StoreError`."""
        keys = find_target_groups(self.group)
        if not keys:
            raise StoreError(f"run {self.name!r} has no target group with a done array")
        return [GroupView.of(k, subgroup(self.group, k), skip_damaged=skip_damaged) for k in keys]


def open_run(root_or_url: zarr.Group | str | os.PathLike | None, run: str, *, s3_endpoint: str | None = None,
             mode: str = "r") -> RunView:
    """Run ``run`` of a store (an open root group, a directory or ``s3://``); :class:`StoreError` when absent."""
    from .storage import open_root

    root = root_or_url if isinstance(root_or_url, zarr.Group) else open_root(
        root_or_url, s3_endpoint=s3_endpoint, mode=mode, create=False)
    if run not in set(root.group_keys()):
        raise StoreError(f"no run {run!r} in the store; runs there: {sorted(root.group_keys())}")
    return RunView(run, root[run])
