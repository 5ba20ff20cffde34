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
import operator
import os
from dataclasses import astuple, dataclass
from datetime import datetime, timezone
from typing import Callable, cast

import numpy as np
import torch
import zarr

from geometry_core.errors import GeometryError
from geometry_core.spectrum import FRACTIONS

from .consolidated import consolidate_group, drop_consolidated
from .executor import DEVICES, Executor, executor
from .integrity import reduced_summary
from .series_reduce import reduce_series, series_steps
from .storage import array_in, group_in
from .view import GroupView, open_run

__all__ = [
    "ARRAYS",
    "DEFAULT_TILE",
    "auto_tile",
    "FRACTIONS",
    "REDUCERS",
    "REDUCER_TABLE",
    "ReducedArray",
    "Reducer",
    "TileStats",
    "enabled_reducers",
    "reduce_group",
    "reduce_run",
    "summary_lines",
]

DEFAULT_TILE = 64
# Past MAX_BLOCKS * DEFAULT_TILE codes the tile grows (in steps of DEFAULT_TILE) so that there are at most
# MAX_BLOCKS blocks, MAX_BLOCKS * (MAX_BLOCKS + 1) / 2 = 820 tasks: at 10,000 codes, 64-code tiles would be
# 12,403 tasks whose reads and writes cost as much as their products.
MAX_BLOCKS = 40


def auto_tile(n: int) -> int:
    """The homogeneity tile for ``n`` codes when none is given: DEFAULT_TILE, or larger past 2,560 codes."""
    blocks_of_default = -(-n // DEFAULT_TILE)
    return DEFAULT_TILE * max(1, -(-blocks_of_default // MAX_BLOCKS))
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


def _tile(view: GroupView, rows: tuple[int, int], cols: tuple[int, int], dtype, device: str = "cpu") -> TileStats:
    """Homogeneity tile (rows, cols) and its mirror (cols, rows): write both chunks, return their statistics.

    One product ``U_iᵀ U_j`` per unordered pair of codes gives both ordered entries
    (:func:`geometry_core.homogeneity.homogeneity_pairs`); no metric is rebuilt.
    """
    from geometry_core.homogeneity import homogeneity_pairs

    (r0, r1), (c0, c1) = rows, cols
    same = rows == cols
    # (row range, column range) -> (log, lin, masked) of that chunk; unused codes stay NaN / -1.
    out = {(rows, cols): _empty_tile(r1 - r0, c1 - c0)}
    if not same:
        out[(cols, rows)] = _empty_tile(c1 - c0, r1 - r0)
    ri = np.flatnonzero(view.used[r0:r1])
    cj = np.flatnonzero(view.used[c0:c1])
    if ri.size and cj.size:
        def side(a: int, b: int) -> dict:
            vals, vecs = view.spectra(a, b)
            corr = vals if view.has_eigvecs else view.eigvals(a, b, torch.float64)  # the stored ones either way
            return {"vals": vals.to(device), "vecs": vecs.to(device), "corr": corr.to(device)}

        r = side(r0, r1)
        c = r if same else side(c0, c1)
        ab, ba = homogeneity_pairs(r["vecs"], r["vals"], c["vecs"], c["vals"], corr_vals_a=r["corr"],
                                   corr_vals_b=c["corr"], same=same, dtype=dtype)
        if same:  # a < b from ab, a > b from ba (homogeneity_pairs computed each pair once)
            upper = torch.ones(ri.size, ri.size, dtype=torch.bool, device=ab[0].device).triu(1)
            ab = tuple(torch.where(upper, x, y) for x, y in zip(ab, ba))
        _place(out[(rows, cols)], ab, np.ix_(ri, cj))
        if not same:
            _place(out[(cols, rows)], ba, np.ix_(cj, ri))
    if same:  # i == j is not a pair: NaN like geometry_core.homogeneity, and no masked count.
        for t, fill in zip(out[(rows, cols)], (np.nan, np.nan, -1)):
            np.fill_diagonal(t, fill)
    red = group_in(view.group, "reduce")
    arrays = [array_in(red, name) for name in ("homogeneity_log", "homogeneity_lin", "homogeneity_masked")]
    stats = TileStats()
    for ((a0, a1), (b0, b1)), values in out.items():
        for arr, x in zip(arrays, values):
            arr[a0:a1, b0:b1] = x
        stats = stats + TileStats.of(*values)
    return stats


def _place(dst: tuple, got: tuple, sel) -> None:
    for d, t in zip(dst, got):
        d[sel] = t.cpu().numpy()


def _empty_tile(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.full((n, m), np.nan), np.full((n, m), np.nan), np.full((n, m), -1, dtype=np.int32)


def _leaf_ranges(view: GroupView) -> list[tuple[int, int]]:
    """Row ranges of _CHUNKS_PER_LEAF chunks that contain at least one done chunk."""
    n = view.layout.n
    step = view.layout.chunk_size * _CHUNKS_PER_LEAF
    return [(a, min(a + step, n)) for a in range(0, n, step) if view.used[a : a + step].any()]


# ---- reducers: one function each, on one _Job; the table below says what each writes ----


@dataclass
class _Job:
    """What a reducer function gets: the group, its reduce/ group, the executor, and the options."""

    view: GroupView
    red: zarr.Group
    ex: Executor
    tile: int
    dtype: torch.dtype
    progress: bool
    global_vals: torch.Tensor | None = None  # set by "global", read by "anisotropy"

    def create(self, name: str, shape, chunks) -> zarr.Array:
        """The reduce/ array ``name`` with the dimensions, dtype and fill value the table gives it."""
        a = ARRAYS[name]
        return self.red.create_array(name, shape=shape, chunks=chunks, dtype=a.dtype, fill_value=a.fill,
                                     dimension_names=a.dims, overwrite=True)


def _reduce_global(job: _Job) -> dict:
    from geometry_core.spectrum import eigen

    view, ex = job.view, job.ex
    ref = ex.put(view)
    total, count = ex.tree_reduce(_partial_sum, [(ref, a, b) for a, b in _leaf_ranges(view)], _combine)
    h_mean = torch.from_numpy(total / count)
    h_mean = 0.5 * (h_mean + h_mean.T)  # the sum of symmetric fp32 matrices is symmetric up to round-off
    vals, vecs = eigen(h_mean)
    d = view.layout.dim
    job.create("global_hessian", (d, d), (d, d))[:] = h_mean.numpy()
    job.create("global_eigvals", (d,), (d,))[:] = vals.numpy()
    job.create("global_eigvecs", (d, d), (d, d))[:] = vecs.numpy()
    job.global_vals = vals
    return {"n_summed": int(count), "top_eigvals": [float(v) for v in vals[:5]]}


def _reduce_homogeneity(job: _Job) -> dict:
    n, tile = job.view.layout.n, job.tile
    for name in REDUCER_TABLE["homogeneity"].arrays:
        job.create(name.name, (n, n), (tile, tile))
    blocks = [(a, min(a + tile, n)) for a in range(0, n, tile)]
    ref = job.ex.put(job.view)
    # One task per unordered pair of blocks, generated lazily: the driver holds no list that grows with N².
    args = ((ref, r, c, job.dtype) for k, r in enumerate(blocks) for c in blocks[k:])
    total = len(blocks) * (len(blocks) + 1) // 2
    stats = job.ex.fold(_tile, args, operator.add, TileStats(), total=total, desc="homogeneity tiles",
                        progress=job.progress, accelerated=True)
    return {"tiles": len(blocks) ** 2, **stats.summary()}


def _reduce_anisotropy(job: _Job) -> dict:
    from geometry_core.spectrum import anisotropy

    view = job.view
    points = np.full((view.layout.n, len(FRACTIONS)), -1, dtype=np.int32)
    rows = np.flatnonzero(view.used)
    if rows.size:
        vals = torch.from_numpy(view.values("eigvals")).double()  # done codes only, in row order
        counts = anisotropy(vals, fractions=FRACTIONS)
        points[rows] = np.stack([np.asarray(counts[f]) for f in FRACTIONS], axis=1)
    arr = job.create("anisotropy_points", points.shape, (view.layout.chunk_size, len(FRACTIONS)))
    arr[:] = points
    arr.attrs["fractions"] = list(FRACTIONS)
    out: dict = {"points_median": [float(np.median(points[rows, k])) if rows.size else math.nan
                                   for k in range(len(FRACTIONS))]}
    if job.global_vals is not None:
        g = anisotropy(job.global_vals, fractions=FRACTIONS)
        global_counts = [int(g[f]) for f in FRACTIONS]
        garr = job.create("anisotropy_global", (len(FRACTIONS),), (len(FRACTIONS),))
        garr[:] = np.asarray(global_counts, dtype=np.int32)
        garr.attrs["fractions"] = list(FRACTIONS)
        out["global"] = global_counts
    return out


def _global_lines(s: dict) -> list[str]:
    if "top_eigvals" not in s:
        return []
    return ["global metric, top eigenvalues: " + ", ".join(f"{v:.4g}" for v in s["top_eigvals"])]


def _homogeneity_lines(s: dict) -> list[str]:
    if "log_mean" not in s:
        return []
    return [f"homogeneity, log scale: {s['log_mean']:.3f} ± {s['log_std']:.3f}; linear scale: "
            f"{s['lin_mean']:.3f} ± {s['lin_std']:.3f} ({s['log_count']} ordered pairs)"]


def _anisotropy_lines(s: dict) -> list[str]:
    out = []
    if "global" in s:
        out.append("anisotropy: eigenvalues holding 99% / 99.9% / 99.99% / 99.999% of the global metric: "
                   + " / ".join(str(c) for c in s["global"]))
    if "points_median" in s:
        out.append("the same per code (median): " + " / ".join(f"{c:g}" for c in s["points_median"]))
    return out


@dataclass(frozen=True)
class ReducedArray:
    """One array a reducer writes under ``reduce/``."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    fill: float | int


@dataclass(frozen=True)
class Reducer:
    """A reducer: its function, the arrays it writes, whether it needs eigenvectors (or hessians) kept.

    ``lines`` turns its summary into the text lines `make demo` prints.
    """

    name: str
    title: str
    compute: Callable[[_Job], dict]
    arrays: tuple[ReducedArray, ...]
    needs_eigvecs: bool
    lines: Callable[[dict], list[str]]


_F64, _I32 = "float64", "int32"
# THE table: spec defaults and keep rule, the reducers a run enables, xarray's fraction coordinates,
# the CLI's help and the demo's summary all read it. Order matters: "anisotropy" uses "global"'s eigenvalues.
REDUCER_TABLE: dict[str, Reducer] = {r.name: r for r in (
    Reducer("global", "global metric", _reduce_global,
            (ReducedArray("global_hessian", ("dim", "dim2"), _F64, math.nan),
             ReducedArray("global_eigvals", ("eig",), _F64, math.nan),
             ReducedArray("global_eigvecs", ("dim", "eig"), _F64, math.nan)), True, _global_lines),
    Reducer("homogeneity", "homogeneity", _reduce_homogeneity,
            (ReducedArray("homogeneity_log", ("code_i", "code_j"), _F64, math.nan),
             ReducedArray("homogeneity_lin", ("code_i", "code_j"), _F64, math.nan),
             ReducedArray("homogeneity_masked", ("code_i", "code_j"), _I32, -1)), True, _homogeneity_lines),
    Reducer("anisotropy", "anisotropy", _reduce_anisotropy,
            (ReducedArray("anisotropy_points", ("code", "fraction"), _I32, -1),
             ReducedArray("anisotropy_global", ("fraction",), _I32, -1)), False, _anisotropy_lines),
)}
REDUCERS = tuple(REDUCER_TABLE)
ARRAYS: dict[str, ReducedArray] = {a.name: a for r in REDUCER_TABLE.values() for a in r.arrays}


def summary_lines(summary: dict) -> list[str]:
    """Text lines of one group's reduce summary, reducer by reducer (`make demo`)."""
    return [line for name, r in REDUCER_TABLE.items() for line in r.lines(summary.get(name) or {})]


def enabled_reducers(attrs: dict) -> tuple[str, ...]:
    """The reducers a run's spec (in its attrs) enables; all when the spec says nothing."""
    spec = attrs.get("spec") or {}
    flags = spec.get("reducers") if isinstance(spec, dict) else None
    if not isinstance(flags, dict):
        return tuple(REDUCER_TABLE)
    return tuple(r for r in REDUCER_TABLE if flags.get(r, True))


def reduce_group(
    group: zarr.Group | GroupView,
    *,
    reducers: tuple[str, ...] | list[str] | None = None,
    tile: int | None = None,
    use_ray: bool = True,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
    ex: Executor | None = None,
    device: str = "auto",
) -> dict:
    """Reduce one ``<model>/<space>/<target>`` group; write ``reduce/`` and return a summary dict.

    ``reducers``: any of the table's (default all): "global", "homogeneity", "anisotropy". ``tile``: rows and
    columns per homogeneity tile (and zarr chunk); None: :func:`auto_tile`. ``ex``: where the tasks run
    (default: Ray tasks on the instance already initialised when ``use_ray``,
    else this process). ``device``: "auto" runs the homogeneity tiles on GPUs where
    the executor has them, "cpu" never (the values are the same). ``dtype``: precision
    of the homogeneity products (float64: log10 of small eigenvalues is meaningless in
    float32 products).
    """
    reducers = tuple(REDUCER_TABLE) if reducers is None else reducers
    bad = [r for r in reducers if r not in REDUCER_TABLE]
    if bad:
        raise GeometryError(f"reducers must be among {list(REDUCER_TABLE)}, got {bad}")
    if device not in DEVICES:
        raise GeometryError(f"device must be one of {list(DEVICES)}, got {device!r}")
    if tile is not None and (not isinstance(tile, int) or isinstance(tile, bool) or tile < 1):
        raise GeometryError(f"tile must be a positive integer, got {tile!r}")
    view = group if isinstance(group, GroupView) else GroupView.of(group.path, group)
    # reduce/ is rewritten below: no consolidated copy of its metadata may outlive it (cluster/xr.py).
    view = dataclasses.replace(view, group=drop_consolidated(view.group))
    ex = ex or executor(use_ray, device=device)
    lay = view.layout
    tile = auto_tile(lay.n) if tile is None else tile
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
    job = _Job(view, red, ex, tile, dtype, progress)
    for name, r in REDUCER_TABLE.items():
        if name in reducers:
            needs = r.needs_eigvecs and not (view.has_hessian or view.has_eigvecs)
            summary[name] = {"skipped": "the run kept neither hessian nor eigvecs"} if needs else r.compute(job)
    if not summary["complete"]:
        summary["note"] = (f"partial: {view.n_chunks_done} of {lay.n_chunks} chunks done; "
                           f"reduced over {summary['n_used']} of {lay.n} codes")
    red.attrs.update({**summary, "fractions": list(FRACTIONS), "tile": tile,
                      "source": "hessian" if view.has_hessian else "eigvecs", "eigen_dtype": "float64",
                      "reduced_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "state": "complete"})
    consolidate_group(view.group)  # plain xarray opens the group in one read (cluster/xr.py)
    return summary


def _spec_device(attrs: dict) -> str:
    """Where the run's spec lets reducer tasks run (``resources.reduce_device``; "auto" when it says nothing)."""
    spec = cast(dict, attrs.get("spec")) if isinstance(attrs.get("spec"), dict) else {}
    res = cast(dict, spec.get("resources")) if isinstance(spec.get("resources"), dict) else {}
    return cast(str, res.get("reduce_device")) if res.get("reduce_device") in DEVICES else "auto"


def reduce_run(
    root_or_url: zarr.Group | str | os.PathLike | None,
    run: str,
    *,
    s3_endpoint: str | None = None,
    address: str | None = None,
    reducers: tuple[str, ...] | list[str] | None = None,
    tile: int | None = None,
    use_ray: bool = True,
    progress: bool = False,
    skip_damaged: bool = False,
    ex: Executor | None = None,
    device: str | None = None,
    stale_only: bool = False,
) -> dict:
    """Reduce every target group of ``run``; return ``{group path: summary}``.

    ``root_or_url``: an open root group or a store URL (local directory or
    ``s3://bucket/prefix``). ``reducers``: default those the run's spec enables.
    ``use_ray``: use Ray if it is already initialised, else start one (embedded,
    or ``address``) and shut it down afterwards; ``use_ray=False`` computes the
    same values in this process. ``device``: "auto" or "cpu" (:func:`reduce_group`);
    default the spec's ``resources.reduce_device``. A damaged done chunk (data and checksum disagree)
    raises :class:`~cluster.view.DamagedChunkError` unless ``skip_damaged``. ``ex``: the
    executor to use (its ``placement`` then says where the tasks ran), set to ``device``.
    ``stale_only``: keep a group whose stored reduce covers the reducers over every chunk
    (:func:`cluster.integrity.reduced_summary`; its summary is returned as stored): a run
    grown by new checkpoints reduces only those. A run with a checkpoint series then gets
    its cross-step statistics (:mod:`cluster.series_reduce`), keyed ``series/<series>/<space>/<target>``.
    """
    from .storage import store_env

    view = open_run(root_or_url, run, s3_endpoint=s3_endpoint, mode="a")
    targets = view.targets(skip_damaged=skip_damaged)
    chosen = tuple(reducers) if reducers is not None else enabled_reducers(view.attrs)
    device = device if device is not None else _spec_device(view.attrs)
    if device not in DEVICES:
        raise GeometryError(f"device must be one of {list(DEVICES)}, got {device!r}")
    started = False
    if use_ray:
        from .ray_runtime import init_ray

        started = init_ray(address, store_env(s3_endpoint))
    try:
        if ex is None:
            ex = executor(use_ray, device=device)
        else:
            ex.device = device  # the caller's executor (for its placement) works on the run's device
        out = {}
        for g in targets:
            kept = reduced_summary(g.group, chosen) if stale_only else None
            out[g.key] = kept if kept is not None else reduce_group(g, reducers=chosen, tile=tile, ex=ex,
                                                                    progress=progress)
        if series_steps(view.attrs):
            out.update({f"series/{k}": v for k, v in reduce_series(view.group).items()})
        return out
    finally:
        if started:
            import ray

            ray.shutdown()
