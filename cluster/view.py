"""A read-only view of a finished (or partial) run: its target groups and the codes that count.

Example::

    from cluster.view import open_run
    run = open_run("./gangeo-results", "quickstart")
    for g in run.targets():                         # one per <model>/<space>/<target>
        lam = g.eigvals(0, g.layout.n, torch.float64)   # (used codes, D)
        H = g.hessians(0, 8, torch.float64)             # stored, or V diag(l) Vᵀ
    rows = run.group_view("dcgan-faces/z/mse", chunks_of=slice(0, 4)).read("eigvals", slice(0, 4))
    rows.data, rows.not_done                        # NaN where the code's chunk is not done

Reducers, the report and the xarray access read a run through this module, so
"which codes are done" and "a metric from its eigen-decomposition" are decided
once (ARRAYS and chunk rows belong to :mod:`cluster.layout`; whether a chunk or a
``reduce/`` counts to :mod:`cluster.integrity`, whose names this module re-exports
for its readers). A chunk that is not done is never data: readers see only the
codes that count (``GroupView.used``), or NaN in their place (``GroupView.read``).
A run being grown or deleted is refused by :func:`open_run`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import zarr

from geometry_core.errors import UsageError, clip
from geometry_core.spectrum import from_eigen

from .integrity import (
    DamagedChunkError,
    counted_chunks,
    damaged_chunks,
    read_rows,
    reduce_state,
    refuse_damaged,
    refuse_unsettled,
    require_reduced,
)
from .layout import ARRAYS, GroupLayout
from .storage import StoreError, array_in, group_in, subgroup

__all__ = ["DamagedChunkError", "GroupView", "Rows", "RunView", "damaged_chunks", "find_target_groups", "open_run",
           "reduce_state", "refuse_damaged", "require_reduced"]

# What --array may name: a group's array or one of its reduce/ arrays, never a path out of the group.
_ARRAY_NAME = re.compile(r"(?:reduce/)?[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Rows:
    """Rows read from a group: NaN where the code does not count, and how many such codes."""

    data: np.ndarray
    not_done: int  # codes among the rows whose chunk is not done
    damaged: int   # damaged done chunks the rows reach, skipped


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
    def of(cls, key: str, group: zarr.Group, *, skip_damaged: bool = False, chunks_of=None) -> "GroupView":
        """The group's view; a done chunk counts only when its data and checksum agree.

        A damaged done chunk raises :class:`DamagedChunkError` unless ``skip_damaged``,
        which leaves it out and lists it in ``damaged``. ``chunks_of``: a code index or
        slice; only the chunks it reaches are checked and may count (a query of a few
        codes reads a few chunks).
        """
        names = frozenset(group.array_keys())
        missing = {"z", "eigvals", "done"} - names
        if missing:
            raise StoreError(f"group {group.path!r}: expected arrays z, eigvals, done; missing {sorted(missing)}")
        lay = GroupLayout.of(group)
        if chunks_of is None:
            chunks = None
        else:
            reached = _rows(lay.n, chunks_of)
            rows = [reached] if isinstance(reached, int) else np.arange(reached.start, reached.stop, reached.step)
            chunks = np.unique(np.asarray(rows, dtype=np.int64) // lay.chunk_size).tolist()
        done, bad = counted_chunks(group, lay, chunks, key=key, skip_damaged=skip_damaged)
        return cls(key, group, lay, lay.codes_done(done), int(done.sum()), names, tuple(sorted(bad.items())))

    @property
    def codes_not_done(self) -> int:
        """Codes whose chunk is not done (left out, or NaN); damaged chunks skipped are not among them."""
        return int(self.layout.n - self.used.sum() - sum(self.layout.n_rows(c) for c, _ in self.damaged))

    def values(self, name: str, a: int = 0, b: int | None = None) -> np.ndarray:
        """``name``'s rows of the used codes in [a, b) (default all), as stored.

        Only spans of counted chunks are read: the bytes of a chunk that is not done
        (zeros, or the half-written rows of a failed write) are never decoded.
        """
        b = self.layout.n if b is None else b
        arr = array_in(self.group, name)
        used = self.used[a:b]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], used.astype(np.int8), [0]])))
        parts = [read_rows(arr, slice(a + lo, a + hi)) for lo, hi in zip(edges[::2], edges[1::2])]
        return np.concatenate(parts) if parts else np.zeros((0,) + tuple(arr.shape[1:]), dtype=arr.dtype)

    def read(self, array: str, index=None) -> Rows:
        """Rows ``index`` (int, slice or None: all) of ``array``; per-code rows that do not count are NaN.

        A per-code array (``z``, ``eigvals``, ``eigvecs``, ``hessian``, or any whose first
        dimension is ``code``) is read only where its chunk counts, so neither the zeros of
        an unwritten chunk nor the half-written rows of a failed write come back as numbers.
        Other arrays (``done``, ``seconds``, ...) are read as stored.
        """
        arr = array_in(self.group, array)
        if not _per_code(array, arr):
            return Rows(read_rows(arr, slice(None) if index is None else index), 0, 0)
        picked = _rows(self.layout.n, index)
        rows = np.asarray([picked] if isinstance(picked, int) else np.arange(picked.start, picked.stop, picked.step),
                          dtype=np.int64)
        out = np.full((rows.size,) + arr.shape[1:], np.nan, dtype=np.result_type(arr.dtype, np.float32))
        counts = self.used[rows]
        chunk_of = rows // self.layout.chunk_size
        # Chunk by chunk, counted chunks only: an unfinished chunk's bytes are never decoded.
        for c in np.unique(chunk_of[counts]):
            span = self.layout.rows(int(c))
            sel = chunk_of == c
            out[sel] = read_rows(arr, span)[rows[sel] - span.start]
        skipped = np.isin(chunk_of, [c for c, _ in self.damaged])
        data = out[0] if isinstance(picked, int) else out
        return Rows(data, int((~counts & ~skipped).sum()), len(np.unique(chunk_of[skipped])))

    @property
    def has_hessian(self) -> bool:
        return "hessian" in self.arrays

    @property
    def has_eigvecs(self) -> bool:
        return "eigvecs" in self.arrays

    def _used(self, name: str, a: int, b: int, dtype) -> torch.Tensor:
        return torch.from_numpy(self.values(name, a, b)).to(dtype)

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
            arr = array_in(self.group, name)  # opened once, read row by row
            return torch.from_numpy(np.stack([read_rows(arr, int(i)) for i in rows])).double()

        if self.has_hessian:
            return stack("hessian").numpy()
        if self.has_eigvecs:
            vals = stack("eigvals")
            return from_eigen(vals, stack("eigvecs")).numpy()
        return None

    def reduced(self) -> dict[str, np.ndarray]:
        """The arrays of ``reduce/`` ({} when the run was not reduced)."""
        if "reduce" not in set(self.group.group_keys()):
            return {}
        require_reduced(self.key, self.group)
        red = group_in(self.group, "reduce")
        return {name: read_rows(array_in(red, name)) for name in red.array_keys()}


def _rows(n: int, index):
    """The code rows an index reaches (an int or a range); IndexError past the end."""
    if index is None:
        return range(n)
    try:
        return range(n)[index]
    except IndexError:  # numpy's wording, as a read of the array would say it
        raise IndexError(f"index {index} is out of bounds for axis 0 with size {n}") from None


def _per_code(name: str, arr) -> bool:
    dims: tuple[str | None, ...] = getattr(arr.metadata, "dimension_names", None) or ()
    return name in ARRAYS or (len(dims) > 0 and dims[0] == "code")


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

    def group_view(self, key: str, *, skip_damaged: bool = False, chunks_of=None) -> GroupView:
        """One target group's view (:meth:`GroupView.of`); :class:`StoreError` when the run has none such."""
        try:
            group = subgroup(self.group, key)
        except KeyError:
            raise StoreError(f"run {self.name!r} has no group {key!r}") from None
        return GroupView.of(key, group, skip_damaged=skip_damaged, chunks_of=chunks_of)

    def read(self, key: str, array: str, index=None, *, skip_damaged: bool = False) -> Rows:
        """Rows ``index`` of one array of group ``key`` (``gangeo query``): codes that do not count are NaN.

        ``reduce/<name>`` is read only from a finished reduce; per-chunk records as stored.
        Only the chunks ``index`` reaches are checked (:meth:`GroupView.of`).
        """
        if not isinstance(array, str) or not _ARRAY_NAME.fullmatch(array):
            raise UsageError(f"--array: expected an array name, or reduce/NAME, of letters, digits and '_', "
                             f"got {clip(array)}")
        try:
            group = subgroup(self.group, key)
        except KeyError:
            raise StoreError(f"run {self.name!r} has no group {key!r}") from None
        if array.startswith("reduce/"):
            require_reduced(key, group)  # an unfinished reduce/ first: its arrays may not exist yet
        try:
            arr = group[array]
        except KeyError:
            arr = None
        if not isinstance(arr, zarr.Array):
            raise StoreError(f"{key}: no array {array!r}; stored: {sorted(group.array_keys())}")
        if array.startswith("reduce/") or not _per_code(array, arr):
            return Rows(read_rows(arr, slice(None) if index is None else index), 0, 0)
        return self.group_view(key, skip_damaged=skip_damaged, chunks_of=index).read(array, index)

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
    view = RunView(run, group_in(root, run))  # a run is a group of the root
    refuse_unsettled(run, view.attrs)
    return view
