"""Reducers: global metric, homogeneity matrix and anisotropy of a sweep, read from the store.

Example::

    from cluster.reduce import reduce_run
    summary = reduce_run("./gangeo-results", "quickstart")          # embedded Ray
    summary = reduce_run("./gangeo-results", "quickstart", use_ray=False)

Reducers read only what the sweep wrote (``z``, ``eigvals`` and ``hessian`` or
``eigvecs``; see DESIGN.md), so they can run later, on another machine. Only
chunks whose ``done`` entry is 1 are used; a partial sweep is reduced over what
is done and the ``reduce/`` attrs say how many codes were used. Results go to
``<run>/<model>/<space>/<target>/reduce/``:

    global_hessian (D, D), global_eigvals (D,), global_eigvecs (D, D)
    homogeneity_log (N, N), homogeneity_lin (N, N), homogeneity_masked (N, N)
    anisotropy_points (N, 4), anisotropy_global (4,)

The global metric is a tree of partial sums (one Ray task per range of chunks,
combined pairwise); the homogeneity matrix is computed by independent Ray tasks,
one per (row block x column block) tile, each writing its own zarr chunk, so no
two writers share a chunk. Re-running overwrites the same values.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import torch
import zarr

from geometry_core.errors import GeometryError
from geometry_core.spectrum import FRACTIONS

__all__ = [
    "DEFAULT_TILE",
    "FRACTIONS",
    "REDUCERS",
    "find_target_groups",
    "reduce_group",
    "reduce_run",
]

DEFAULT_TILE = 64
REDUCERS = ("global", "homogeneity", "anisotropy")
# Chunks of the sweep summed by one partial-sum task (the leaves of the tree).
_CHUNKS_PER_LEAF = 4
# Tasks in flight at once: enough to keep a cluster busy, bounded for memory.
_WINDOW = 64


@dataclass(frozen=True)
class _Layout:
    """What one target group holds, read once by the driver of the reduction."""

    n: int
    d: int
    chunk: int
    used: np.ndarray  # (N,) bool: the code's chunk is done
    n_chunks: int
    n_chunks_done: int
    has_hessian: bool
    has_eigvecs: bool


def _layout(group: zarr.Group) -> _Layout:
    names = set(group.array_keys())
    missing = {"z", "eigvals", "done"} - names
    if missing:
        raise GeometryError(f"group {group.path!r}: expected arrays z, eigvals, done; missing {sorted(missing)}")
    z = group["z"]
    n, d = z.shape
    chunk = z.chunks[0]
    done = np.asarray(group["done"][:]) == 1
    used = np.repeat(done, chunk)[:n]
    return _Layout(
        n=n, d=d, chunk=chunk, used=used, n_chunks=done.size, n_chunks_done=int(done.sum()),
        has_hessian="hessian" in names, has_eigvecs="eigvecs" in names,
    )


def _read_hessians(group: zarr.Group, lay: _Layout, a: int, b: int, dtype) -> torch.Tensor:
    """H for the used codes in rows [a, b); reconstructed as V diag(l) V^T without a stored hessian."""
    rows = lay.used[a:b]
    if lay.has_hessian:
        return torch.from_numpy(np.asarray(group["hessian"][a:b])[rows]).to(dtype)
    vecs = torch.from_numpy(np.asarray(group["eigvecs"][a:b])[rows]).to(dtype)
    vals = torch.from_numpy(np.asarray(group["eigvals"][a:b])[rows]).to(dtype)
    return torch.einsum("bik,bk,bjk->bij", vecs, vals, vecs)


def _read_eigvecs(group: zarr.Group, lay: _Layout, a: int, b: int, dtype) -> torch.Tensor:
    """Eigenvectors (columns, descending order) of the used codes in rows [a, b)."""
    if lay.has_eigvecs:
        return torch.from_numpy(np.asarray(group["eigvecs"][a:b])[lay.used[a:b]]).to(dtype)
    from geometry_core.spectrum import eigen

    return eigen(_read_hessians(group, lay, a, b, dtype))[1]  # decomposed in float64 whatever dtype


def _read_eigvals(group: zarr.Group, lay: _Layout, a: int, b: int, dtype) -> torch.Tensor:
    return torch.from_numpy(np.asarray(group["eigvals"][a:b])[lay.used[a:b]]).to(dtype)


# ---- tasks (plain functions; wrapped with ray.remote when Ray is used) ----


def _partial_sum(group: zarr.Group, lay: _Layout, a: int, b: int) -> tuple[np.ndarray, int]:
    """Leaf of the tree: the float64 sum of H over the used codes in rows [a, b), and their count."""
    h = _read_hessians(group, lay, a, b, torch.float64)
    return h.sum(dim=0).numpy(), int(h.shape[0])


def _combine(left: tuple[np.ndarray, int], right: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    return left[0] + right[0], left[1] + right[1]


def _tile(group: zarr.Group, lay: _Layout, rows: tuple[int, int], cols: tuple[int, int], dtype) -> np.ndarray:
    """One homogeneity tile: compute, write its zarr chunk, return its off-diagonal sums.

    Returns [sum, sum of squares, count] for log then lin, then the masked total (7 floats).
    """
    from geometry_core.homogeneity import homogeneity_tile

    (r0, r1), (c0, c1) = rows, cols
    shape = (r1 - r0, c1 - c0)
    out_log = np.full(shape, np.nan)
    out_lin = np.full(shape, np.nan)
    out_masked = np.full(shape, -1, dtype=np.int32)
    ri = np.flatnonzero(lay.used[r0:r1])
    cj = np.flatnonzero(lay.used[c0:c1])
    if ri.size and cj.size:
        vecs = _read_eigvecs(group, lay, r0, r1, dtype)
        hess = _read_hessians(group, lay, c0, c1, dtype)
        vals = _read_eigvals(group, lay, c0, c1, dtype)
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
    red = group["reduce"]
    red["homogeneity_log"][r0:r1, c0:c1] = out_log
    red["homogeneity_lin"][r0:r1, c0:c1] = out_lin
    red["homogeneity_masked"][r0:r1, c0:c1] = out_masked
    stats = []
    for m in (out_log, out_lin):
        f = m[np.isfinite(m)]
        stats += [f.sum(), np.square(f).sum(), float(f.size)]
    stats.append(float(out_masked[out_masked > 0].sum()))
    return np.asarray(stats)


# ---- execution: in-process or as Ray tasks, with a bounded window ----


def _map(fn, args: list[tuple], use_ray: bool, *, desc: str = "reduce", progress: bool = False) -> list:
    """fn(*a) for each a, in order; as Ray tasks keeping at most _WINDOW in flight."""
    from tqdm import tqdm

    bar = tqdm(total=len(args), desc=desc, unit="tile", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, leave=False)
    with bar:
        if not use_ray:
            out = []
            for a in args:
                out.append(fn(*a))
                bar.update(1)
            return out
        import ray

        remote = ray.remote(num_cpus=1, max_retries=2)(fn)
        refs: list = []
        pending: list = []
        for a in args:
            if len(pending) >= _WINDOW:
                _, pending = ray.wait(pending, num_returns=1, fetch_local=False)
                bar.update(1)
            refs.append(remote.remote(*a))
            pending.append(refs[-1])
        while pending:
            _, pending = ray.wait(pending, num_returns=1, fetch_local=False)
            bar.update(1)
        return ray.get(refs)


def _tree_sum(leaves: list, use_ray: bool):
    """Combine partial sums pairwise, level by level (log2 depth)."""
    if use_ray:
        import ray

        combine = ray.remote(num_cpus=1, max_retries=2)(_combine)
    while len(leaves) > 1:
        paired = []
        for k in range(0, len(leaves) - 1, 2):
            a, b = leaves[k], leaves[k + 1]
            paired.append(combine.remote(a, b) if use_ray else _combine(a, b))
        if len(leaves) % 2:
            paired.append(leaves[-1])
        leaves = paired
    if use_ray:
        import ray

        return ray.get(leaves[0])
    return leaves[0]


def _leaf_ranges(lay: _Layout) -> list[tuple[int, int]]:
    """Row ranges of _CHUNKS_PER_LEAF chunks that contain at least one done chunk."""
    step = lay.chunk * _CHUNKS_PER_LEAF
    return [(a, min(a + step, lay.n)) for a in range(0, lay.n, step) if lay.used[a : a + step].any()]


# ---- reducers ----


def _new_array(red: zarr.Group, name: str, shape, chunks, dtype, fill, dims) -> zarr.Array:
    return red.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, dimension_names=dims, overwrite=True
    )


def _reduce_global(group, lay, red, use_ray) -> dict:
    from geometry_core.spectrum import eigen

    if not (lay.has_hessian or lay.has_eigvecs):
        return {"skipped": "the run kept neither hessian nor eigvecs"}
    if use_ray:
        import ray

        leaf = ray.remote(num_cpus=1, max_retries=2)(_partial_sum)
        g_ref, l_ref = ray.put(group), ray.put(lay)
        leaves = [leaf.remote(g_ref, l_ref, a, b) for a, b in _leaf_ranges(lay)]
    else:
        leaves = [_partial_sum(group, lay, a, b) for a, b in _leaf_ranges(lay)]
    total, count = _tree_sum(leaves, use_ray)
    h_mean = torch.from_numpy(total / count)
    h_mean = 0.5 * (h_mean + h_mean.T)  # the sum of symmetric fp32 matrices is symmetric up to round-off
    vals, vecs = eigen(h_mean)
    d = lay.d
    _new_array(red, "global_hessian", (d, d), (d, d), "float64", np.nan, ("dim", "dim2"))[:] = h_mean.numpy()
    _new_array(red, "global_eigvals", (d,), (d,), "float64", np.nan, ("eig",))[:] = vals.numpy()
    _new_array(red, "global_eigvecs", (d, d), (d, d), "float64", np.nan, ("dim", "eig"))[:] = vecs.numpy()
    return {"n_summed": int(count), "top_eigvals": [float(v) for v in vals[:5]], "eigvals": vals}


def _reduce_homogeneity(group, lay, red, tile, use_ray, dtype, progress=False) -> dict:
    if not (lay.has_hessian or lay.has_eigvecs):
        return {"skipped": "the run kept neither hessian nor eigvecs"}
    n = lay.n
    for name, dt, fill in (("homogeneity_log", "float64", np.nan), ("homogeneity_lin", "float64", np.nan),
                           ("homogeneity_masked", "int32", -1)):
        _new_array(red, name, (n, n), (tile, tile), dt, fill, ("code_i", "code_j"))
    blocks = [(a, min(a + tile, n)) for a in range(0, n, tile)]
    if use_ray:
        import ray

        g_ref, l_ref = ray.put(group), ray.put(lay)
    else:
        g_ref, l_ref = group, lay
    args = [(g_ref, l_ref, r, c, dtype) for r in blocks for c in blocks]
    s = np.sum(_map(_tile, args, use_ray, desc="homogeneity tiles", progress=progress), axis=0)
    out = {"tiles": len(args), "masked_total": int(s[6])}
    for k, name in ((0, "log"), (3, "lin")):
        cnt = s[k + 2]
        mean = s[k] / cnt if cnt else math.nan
        var = max(s[k + 1] / cnt - mean * mean, 0.0) if cnt else math.nan
        out[f"{name}_mean"], out[f"{name}_std"], out[f"{name}_count"] = float(mean), math.sqrt(var), int(cnt)
    return out


def _reduce_anisotropy(group, lay, red, global_vals) -> dict:
    from geometry_core.spectrum import anisotropy

    points = np.full((lay.n, len(FRACTIONS)), -1, dtype=np.int32)
    rows = np.flatnonzero(lay.used)
    if rows.size:
        vals = torch.from_numpy(np.asarray(group["eigvals"][:])[rows]).double()
        counts = anisotropy(vals, fractions=FRACTIONS)
        points[rows] = np.stack([np.asarray(counts[f]) for f in FRACTIONS], axis=1)
    arr = _new_array(red, "anisotropy_points", points.shape, (lay.chunk, len(FRACTIONS)), "int32", -1,
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
    group: zarr.Group,
    *,
    reducers: tuple[str, ...] | list[str] = REDUCERS,
    tile: int = DEFAULT_TILE,
    use_ray: bool = True,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> dict:
    """Reduce one ``<model>/<space>/<target>`` group; write ``reduce/`` and return a summary dict.

    ``reducers``: any of "global", "homogeneity", "anisotropy". ``tile``: rows and
    columns per homogeneity tile (and zarr chunk). ``use_ray``: run tasks on the
    Ray instance already initialised (``reduce_run`` starts one), else in-process.
    ``dtype``: precision of the homogeneity products (float64: log10 of small
    eigenvalues is meaningless in float32 products).
    """
    bad = [r for r in reducers if r not in REDUCERS]
    if bad:
        raise GeometryError(f"reducers must be among {list(REDUCERS)}, got {bad}")
    if not isinstance(tile, int) or tile < 1:
        raise GeometryError(f"tile must be a positive integer, got {tile!r}")
    lay = _layout(group)
    red = group.require_group("reduce")
    summary: dict = {"n_codes": lay.n, "n_used": int(lay.used.sum()), "n_chunks": lay.n_chunks,
                     "n_chunks_done": lay.n_chunks_done, "complete": lay.n_chunks_done == lay.n_chunks}
    if summary["n_used"] == 0:
        summary["note"] = "no chunk is done: nothing reduced"
        red.attrs.update(summary)
        return summary
    global_vals = None
    if "global" in reducers:
        g = _reduce_global(group, lay, red, use_ray)
        global_vals = g.pop("eigvals", None)
        summary["global"] = g
    if "homogeneity" in reducers:
        summary["homogeneity"] = _reduce_homogeneity(group, lay, red, tile, use_ray, dtype, progress)
    if "anisotropy" in reducers:
        summary["anisotropy"] = _reduce_anisotropy(group, lay, red, global_vals)
    if not summary["complete"]:
        summary["note"] = (f"partial: {lay.n_chunks_done} of {lay.n_chunks} chunks done; "
                           f"reduced over {summary['n_used']} of {lay.n} codes")
    red.attrs.update({**summary, "fractions": list(FRACTIONS), "tile": tile,
                      "source": "hessian" if lay.has_hessian else "eigvecs", "eigen_dtype": "float64",
                      "reduced_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return summary


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


def _spec_reducers(run_group: zarr.Group) -> tuple[str, ...]:
    """The reducers the run's spec enables (all when the spec says nothing)."""
    spec = run_group.attrs.get("spec") or {}
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
) -> dict:
    """Reduce every target group of ``run``; return ``{group path: summary}``.

    ``root_or_url``: an open root group or a store URL (local directory or
    ``s3://bucket/prefix``). ``reducers``: default those the run's spec enables.
    ``use_ray``: use Ray if it is already initialised, else start one (embedded,
    or ``address``) and shut it down afterwards; ``use_ray=False`` computes the
    same values in this process.
    """
    from cluster.storage import open_root, store_env

    root = root_or_url if isinstance(root_or_url, zarr.Group) else open_root(
        root_or_url, s3_endpoint=s3_endpoint, mode="a", create=False)
    if run not in set(root.group_keys()):
        raise GeometryError(f"no run {run!r} in the store; runs there: {sorted(root.group_keys())}")
    run_group = root[run]
    targets = find_target_groups(run_group)
    if not targets:
        raise GeometryError(f"run {run!r} has no target group with a done array")
    chosen = tuple(reducers) if reducers is not None else _spec_reducers(run_group)
    started = False
    if use_ray:
        from cluster.ray_runtime import init_ray

        started = init_ray(address, store_env(s3_endpoint))
    try:
        return {path: reduce_group(run_group[path], reducers=chosen, tile=tile, use_ray=use_ray,
                                   progress=progress)
                for path in targets}
    finally:
        if started:
            import ray

            ray.shutdown()
