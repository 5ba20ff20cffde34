"""A read-only view of a finished (or partial) run: its target groups and the codes that count.

Example::

    from cluster.view import open_run
    run = open_run("./gangeo-results", "quickstart")
    for g in run.targets():                         # one per <model>/<space>/<target>
        lam = g.eigvals(0, g.layout.n, torch.float64)   # (used codes, D)
        H = g.hessians(0, 8, torch.float64)             # stored, or V diag(l) Vᵀ

Reducers, the report and the xarray access read a run through this module, so
"which codes are done" and "a metric from its eigen-decomposition" are decided
once (ARRAYS and chunk rows belong to :mod:`cluster.layout`; whether a chunk or a
``reduce/`` counts to :mod:`cluster.integrity`, whose names this module re-exports
for its readers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import zarr

from geometry_core.spectrum import from_eigen

from .integrity import DamagedChunkError, damaged_chunks, reduce_state, refuse_damaged, require_reduced
from .layout import GroupLayout
from .storage import StoreError, subgroup

__all__ = ["DamagedChunkError", "GroupView", "RunView", "damaged_chunks", "find_target_groups", "open_run",
           "reduce_state", "refuse_damaged", "require_reduced"]


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
