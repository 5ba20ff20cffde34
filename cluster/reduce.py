"""Reducers: global metric, homogeneity matrix and anisotropy of a sweep, read from the store.

Example::

    from cluster.reduce import reduce_run
    summary = reduce_run("./gangeo-results", "quickstart")          # embedded Ray
    summary = reduce_run("./gangeo-results", "quickstart", use_ray=False)

Reducers read only what the sweep wrote (``z``, ``eigvals`` and ``hessian`` or
``eigvecs``; ARCHITECTURE.md, "Store"), so they can run later, on another machine. Only
chunks whose ``done`` entry is 1 are used; a partial sweep is reduced over what
is done and the ``reduce/`` attrs say how many codes were used. Results go to
``<run>/<model>/<space>/<target>/reduce/``:

    global_hessian (D, D), global_eigvals (D,), global_eigvecs (D, D)
    homogeneity_log (N, N), homogeneity_lin (N, N), homogeneity_masked (N, N)
    anisotropy_points (N, 4), anisotropy_global (4,)

The global metric is a tree of partial sums (one Ray task per range of chunks,
combined pairwise); the homogeneity matrix is computed by independent Ray tasks,
one per (row block x column block) tile, each writing its own zarr chunk, so no
two writers share a chunk. Re-running overwrites the same values. A reduce first
removes the group's consolidated metadata and writes it anew once ``reduce/`` is
complete (:mod:`cluster.xr`), so plain ``xr.open_zarr`` never reads a stale copy.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import astuple, dataclass
from datetime import datetime, timezone

import numpy as np
import torch
import zarr

from geometry_core.errors import GeometryError
from geometry_core.spectrum import FRACTIONS

from .executor import Executor, executor
from .view import GroupView, open_run
from .xr import consolidate_group, drop_consolidated

__all__ = [
    "DEFAULT_TILE",
    "FRACTIONS",
    "REDUCERS",
    "TileStats",
    "reduce_group",
    "reduce_run",
]

DEFAULT_TILE = 64
REDUCERS = ("global", "homogeneity", "anisotropy")
# Chunks of the sweep summed by one partial-sum task (the leaves of the tree).
_CHUNKS_PER_LEAF = 4


@dataclass(frozen=True)
class TileStats:
    """Sums over the finite off-diagonal entries of homogeneity tiles, log and linear scale."""

    log_sum: float = 0.0
    log_sq: float = 0.0
    log_count: float = 0.0
    lin_sum: float = 0.0
    lin_sq: float = 0.0
    lin_count: float = 0.0
    masked: float = 0.0  # eigen-directions masked (non-positive) over all pairs

    @classmethod
    def of(cls, log: np.ndarray, lin: np.ndarray, masked: np.ndarray) -> "TileStats":
        f, g = log[np.isfinite(log)], lin[np.isfinite(lin)]
        return cls(f.sum(), np.square(f).sum(), float(f.size), g.sum(), np.square(g).sum(), float(g.size),
                   float(masked[masked > 0].sum()))

    def __add__(self, other: "TileStats") -> "TileStats":
        return TileStats(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def summary(self) -> dict:
        """mean, std and count per scale, and the masked total."""
        out: dict = {"masked_total": int(self.masked)}
        for name, s, sq, cnt in (("log", self.log_sum, self.log_sq, self.log_count),
                                 ("lin", self.lin_sum, self.lin_sq, self.lin_count)):
            mean = s / cnt if cnt else math.nan
            var = max(sq / cnt - mean * mean, 0.0) if cnt else math.nan
            out[f"{name}_mean"], out[f"{name}_std"], out[f"{name}_count"] = float(mean), math.sqrt(var), int(cnt)
        return out


# ---- tasks: plain functions of a GroupView, run by an executor ----


def _partial_sum(view: GroupView, a: int, b: int) -> tuple[np.ndarray, int]:
    """Leaf of the tree: the float64 sum of H over the used codes in rows [a, b), and their count."""
    h = view.hessians(a, b, torch.float64)
    return h.sum(dim=0).numpy(), int(h.shape[0])


def _combine(left: tuple[np.ndarray, int], right: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    return left[0] + right[0], left[1] + right[1]


def _tile(view: GroupView, rows: tuple[int, int], cols: tuple[int, int], dtype) -> TileStats:
    """One homogeneity tile: compute, write its zarr chunk, return its statistics."""
    from geometry_core.homogeneity import homogeneity_tile

    (r0, r1), (c0, c1) = rows, cols
    shape = (r1 - r0, c1 - c0)
    out_log = np.full(shape, np.nan)
    out_lin = np.full(shape, np.nan)
    out_masked = np.full(shape, -1, dtype=np.int32)
    ri = np.flatnonzero(view.used[r0:r1])
    cj = np.flatnonzero(view.used[c0:c1])
    if ri.size and cj.size:
        vecs = view.eigvecs(r0, r1, dtype)
        hess = view.hessians(c0, c1, dtype)
        vals = view.eigvals(c0, c1, dtype)
        t_log, t_lin, t_masked = homogeneity_tile(vecs, hess, vals)
        sel = np.ix_(ri, cj)
        out_log[sel] = t_log.double().cpu().numpy()
        out_lin[sel] = t_lin.double().cpu().numpy()
        out_masked[sel] = t_masked.cpu().numpy().astype(np.int32)
    # i == j is not a pair: NaN like geometry_core.homogeneity, and no masked count.
    gi, gj = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    diag = gi == gj
    out_log[diag] = np.nan
    out_lin[diag] = np.nan
    out_masked[diag] = -1
    red = view.group["reduce"]
    red["homogeneity_log"][r0:r1, c0:c1] = out_log
    red["homogeneity_lin"][r0:r1, c0:c1] = out_lin
    red["homogeneity_masked"][r0:r1, c0:c1] = out_masked
    return TileStats.of(out_log, out_lin, out_masked)


def _leaf_ranges(view: GroupView) -> list[tuple[int, int]]:
    """Row ranges of _CHUNKS_PER_LEAF chunks that contain at least one done chunk."""
    n = view.layout.n
    step = view.layout.chunk_size * _CHUNKS_PER_LEAF
    return [(a, min(a + step, n)) for a in range(0, n, step) if view.used[a : a + step].any()]


# ---- reducers ----


def _new_array(red: zarr.Group, name: str, shape, chunks, dtype, fill, dims) -> zarr.Array:
    return red.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, dimension_names=dims, overwrite=True
    )


def _reduce_global(view: GroupView, red, ex: Executor) -> dict:
    from geometry_core.spectrum import eigen

    if not (view.has_hessian or view.has_eigvecs):
        return {"skipped": "the run kept neither hessian nor eigvecs"}
    ref = ex.put(view)
    total, count = ex.tree_reduce(_partial_sum, [(ref, a, b) for a, b in _leaf_ranges(view)], _combine)
    h_mean = torch.from_numpy(total / count)
    h_mean = 0.5 * (h_mean + h_mean.T)  # the sum of symmetric fp32 matrices is symmetric up to round-off
    vals, vecs = eigen(h_mean)
    d = view.layout.dim
    _new_array(red, "global_hessian", (d, d), (d, d), "float64", np.nan, ("dim", "dim2"))[:] = h_mean.numpy()
    _new_array(red, "global_eigvals", (d,), (d,), "float64", np.nan, ("eig",))[:] = vals.numpy()
    _new_array(red, "global_eigvecs", (d, d), (d, d), "float64", np.nan, ("dim", "eig"))[:] = vecs.numpy()
    return {"n_summed": int(count), "top_eigvals": [float(v) for v in vals[:5]], "eigvals": vals}


def _reduce_homogeneity(view: GroupView, red, tile: int, ex: Executor, dtype, progress=False) -> dict:
    if not (view.has_hessian or view.has_eigvecs):
        return {"skipped": "the run kept neither hessian nor eigvecs"}
    n = view.layout.n
    for name, dt, fill in (("homogeneity_log", "float64", np.nan), ("homogeneity_lin", "float64", np.nan),
                           ("homogeneity_masked", "int32", -1)):
        _new_array(red, name, (n, n), (tile, tile), dt, fill, ("code_i", "code_j"))
    blocks = [(a, min(a + tile, n)) for a in range(0, n, tile)]
    ref = ex.put(view)
    args = [(ref, r, c, dtype) for r in blocks for c in blocks]
    stats = sum(ex.map(_tile, args, desc="homogeneity tiles", progress=progress), TileStats())
    return {"tiles": len(args), **stats.summary()}


def _reduce_anisotropy(view: GroupView, red, global_vals) -> dict:
    from geometry_core.spectrum import anisotropy

    points = np.full((view.layout.n, len(FRACTIONS)), -1, dtype=np.int32)
    rows = np.flatnonzero(view.used)
    if rows.size:
        vals = torch.from_numpy(view.values("eigvals")).double()  # done codes only, in row order
        counts = anisotropy(vals, fractions=FRACTIONS)
        points[rows] = np.stack([np.asarray(counts[f]) for f in FRACTIONS], axis=1)
    arr = _new_array(red, "anisotropy_points", points.shape, (view.layout.chunk_size, len(FRACTIONS)), "int32", -1,
                     ("code", "fraction"))
    arr[:] = points
    arr.attrs["fractions"] = list(FRACTIONS)
    out = {"points_median": [float(np.median(points[rows, k])) if rows.size else math.nan
                             for k in range(len(FRACTIONS))]}
    if global_vals is not None:
        g = anisotropy(global_vals, fractions=FRACTIONS)
        counts = [int(g[f]) for f in FRACTIONS]
        garr = _new_array(red, "anisotropy_global", (len(FRACTIONS),), (len(FRACTIONS),), "int32", -1, ("fraction",))
        garr[:] = np.asarray(counts, dtype=np.int32)
        garr.attrs["fractions"] = list(FRACTIONS)
        out["global"] = counts
    return out


def reduce_group(
    group: zarr.Group | GroupView,
    *,
    reducers: tuple[str, ...] | list[str] = REDUCERS,
    tile: int = DEFAULT_TILE,
    use_ray: bool = True,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
    ex: Executor | None = None,
) -> dict:
    """Reduce one ``<model>/<space>/<target>`` group; write ``reduce/`` and return a summary dict.

    ``reducers``: any of "global", "homogeneity", "anisotropy". ``tile``: rows and
    columns per homogeneity tile (and zarr chunk). ``ex``: where the tasks run
    (default: Ray tasks on the instance already initialised when ``use_ray``,
    else this process). ``dtype``: precision of the homogeneity products
    (float64: log10 of small eigenvalues is meaningless in float32 products).
    """
    bad = [r for r in reducers if r not in REDUCERS]
    if bad:
        raise GeometryError(f"reducers must be among {list(REDUCERS)}, got {bad}")
    if not isinstance(tile, int) or tile < 1:
        raise GeometryError(f"tile must be a positive integer, got {tile!r}")
    view = group if isinstance(group, GroupView) else GroupView.of(group.path, group)
    # reduce/ is rewritten below: no consolidated copy of its metadata may outlive it (cluster/xr.py).
    view = dataclasses.replace(view, group=drop_consolidated(view.group))
    ex = ex or executor(use_ray)
    lay = view.layout
    red = view.group.require_group("reduce")
    # The completion record is written last: until then reduce/ reads as unfinished (ARCHITECTURE.md, "Store").
    red.attrs.update({"state": "reducing", "reduced_at": None})
    summary: dict = {"n_codes": lay.n, "n_used": int(view.used.sum()), "n_chunks": lay.n_chunks,
                     "n_chunks_done": view.n_chunks_done, "complete": view.n_chunks_done == lay.n_chunks}
    if view.damaged:
        summary["damaged_skipped"] = [c for c, _ in view.damaged]
    if summary["n_used"] == 0:
        summary["note"] = "no chunk is done: nothing reduced"
        red.attrs.update({**summary, "state": "complete"})
        consolidate_group(view.group)
        return summary
    global_vals = None
    if "global" in reducers:
        g = _reduce_global(view, red, ex)
        global_vals = g.pop("eigvals", None)
        summary["global"] = g
    if "homogeneity" in reducers:
        summary["homogeneity"] = _reduce_homogeneity(view, red, tile, ex, dtype, progress)
    if "anisotropy" in reducers:
        summary["anisotropy"] = _reduce_anisotropy(view, red, global_vals)
    if not summary["complete"]:
        summary["note"] = (f"partial: {view.n_chunks_done} of {lay.n_chunks} chunks done; "
                           f"reduced over {summary['n_used']} of {lay.n} codes")
    red.attrs.update({**summary, "fractions": list(FRACTIONS), "tile": tile,
                      "source": "hessian" if view.has_hessian else "eigvecs", "eigen_dtype": "float64",
                      "reduced_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "state": "complete"})
    consolidate_group(view.group)  # plain xarray opens the group in one read (cluster/xr.py)
    return summary


def _spec_reducers(attrs: dict) -> tuple[str, ...]:
    """The reducers the run's spec enables (all when the spec says nothing)."""
    spec = attrs.get("spec") or {}
    flags = spec.get("reducers") if isinstance(spec, dict) else None
    if not isinstance(flags, dict):
        return REDUCERS
    return tuple(r for r in REDUCERS if flags.get(r, True))


def reduce_run(
    root_or_url: zarr.Group | str | os.PathLike | None,
    run: str,
    *,
    s3_endpoint: str | None = None,
    address: str | None = None,
    reducers: tuple[str, ...] | list[str] | None = None,
    tile: int = DEFAULT_TILE,
    use_ray: bool = True,
    progress: bool = False,
    skip_damaged: bool = False,
) -> dict:
    """Reduce every target group of ``run``; return ``{group path: summary}``.

    ``root_or_url``: an open root group or a store URL (local directory or
    ``s3://bucket/prefix``). ``reducers``: default those the run's spec enables.
    ``use_ray``: use Ray if it is already initialised, else start one (embedded,
    or ``address``) and shut it down afterwards; ``use_ray=False`` computes the
    same values in this process. A damaged done chunk (data and checksum disagree)
    raises :class:`~cluster.view.DamagedChunkError` unless ``skip_damaged``.
    """
    from .storage import store_env

    view = open_run(root_or_url, run, s3_endpoint=s3_endpoint, mode="a")
    targets = view.targets(skip_damaged=skip_damaged)
    chosen = tuple(reducers) if reducers is not None else _spec_reducers(view.attrs)
    started = False
    if use_ray:
        from .ray_runtime import init_ray

        started = init_ray(address, store_env(s3_endpoint))
    try:
        ex = executor(use_ray)
        return {g.key: reduce_group(g, reducers=chosen, tile=tile, ex=ex, progress=progress) for g in targets}
    finally:
        if started:
            import ray

            ray.shutdown()
