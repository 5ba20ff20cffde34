"""Cross-step statistics of a checkpoint series (ARCHITECTURE.md, "Series").

Example::

    from cluster.series_reduce import reduce_series
    reduce_series(run_group)      # after every step's group is reduced
    import xarray as xr
    ds = xr.open_zarr("./gangeo-results/faces-training/reduce/series/faces/z/mse")
    ds.alignment_final.sel(angle=1)          # (step,): cosine of the first principal angle
    ds.anisotropy_global.sel(fraction=0.99)  # (step,)

For each series of a run (:mod:`cluster.series`) and each ``<space>/<target>`` its
checkpoints share, read from each step's group reduce (nothing recomputed per code):

- ``top_eigvals`` (step, rank): the global metric's largest eigenvalues (ranks 1..5);
- ``anisotropy_global`` (step, fraction): eigenvalues needed for each fraction of the trace;
- ``homogeneity_log_mean``, ``homogeneity_lin_mean`` (step,): the homogeneity matrix's means;
- ``alignment_final`` (step, angle): cosines of the principal angles between the global
  metric's top-``k`` eigenspace at each step and at the last step (all 1 at the last);
- ``alignment_next`` (step, angle): the same between each step and the next (NaN at the last).

Written under ``<run>/reduce/series/<series>/<space>/<target>/``; ``step``, ``rank``,
``fraction`` and ``angle`` are stored as coordinate arrays, so xarray opens the group
with ``step`` as a dimension. A quantity a step's reduce lacks (its reducer disabled)
is NaN (-1 for counts). The statistics depend on every step, so they are rewritten
whole whenever the series' groups are reduced.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import zarr

from geometry_core.alignment import subspace_cosines
from geometry_core.spectrum import FRACTIONS

from .integrity import read_rows, reduce_state
from .storage import array_in, group_in

__all__ = ["SERIES_GROUP", "TOP_EIGVALS", "TOP_K", "reduce_series", "series_steps"]

SERIES_GROUP = "reduce/series"
TOP_EIGVALS = 5  # eigenvalues kept per step
TOP_K = 10  # dimension of the eigenspaces compared across steps


def series_steps(attrs: dict) -> dict[str, list[tuple[int, str]]]:
    """Series label -> ``(step, group label)`` in step order, from the run's weights identity."""
    weights = (attrs.get("identity") or {}).get("weights") or {}
    out: dict[str, dict[int, str]] = {}
    for key, entry in weights.items():
        if isinstance(entry, dict) and isinstance(entry.get("series"), str) and isinstance(entry.get("step"), int):
            out.setdefault(entry["series"], {})[entry["step"]] = key.split("/", 1)[0]
    return {s: sorted(steps.items()) for s, steps in sorted(out.items())}


def reduce_series(run_group: zarr.Group) -> dict:
    """Write every series' cross-step statistics; ``{"<series>/<space>/<target>": summary}``."""
    attrs: dict = dict(run_group.attrs)  # free-form JSON, read as series_steps reads it
    keys = list(attrs.get("groups") or [])
    out = {}
    for series, steps in series_steps(attrs).items():
        labels = {label for _, label in steps}
        rests = list(dict.fromkeys(k.split("/", 1)[1] for k in keys if k.split("/", 1)[0] in labels))
        for rest in rests:
            groups = [_reduce_of(run_group, f"{label}/{rest}") for _, label in steps]
            dest = f"{SERIES_GROUP}/{series}/{rest}"
            out[f"{series}/{rest}"] = _write(run_group, dest, [s for s, _ in steps], [lb for _, lb in steps], groups)
    return out


def _reduce_of(run_group: zarr.Group, key: str) -> zarr.Group | None:
    """The step group's ``reduce/`` when its reduce is complete (:func:`cluster.integrity.reduce_state`)."""
    try:
        group = run_group[key]
    except KeyError:
        return None
    return (group_in(group, "reduce") if isinstance(group, zarr.Group) and reduce_state(group) == "complete"
            else None)


def _read(red: zarr.Group | None, name: str) -> np.ndarray | None:
    if red is None or name not in set(red.array_keys()):
        return None
    return read_rows(array_in(red, name))


def _write(run_group: zarr.Group, dest: str, steps: list[int], labels: list[str], reds: list) -> dict:
    S = len(steps)
    vals = [_read(r, "global_eigvals") for r in reds]
    vecs = [_read(r, "global_eigvecs") for r in reds]
    dim = next((v.shape[0] for v in vals if v is not None), 0)
    k = min(TOP_K, dim)
    top = np.full((S, TOP_EIGVALS), np.nan)
    aniso = np.full((S, len(FRACTIONS)), -1, dtype=np.int32)
    hom = {s: np.full(S, np.nan) for s in ("log", "lin")}
    final = np.full((S, max(k, 1)), np.nan)
    nxt = np.full((S, max(k, 1)), np.nan)
    for i, (r, v) in enumerate(zip(reds, vals)):
        if v is not None:
            n = min(TOP_EIGVALS, v.shape[0])
            top[i, :n] = v[:n]
        a = _read(r, "anisotropy_global")
        if a is not None and a.shape == (len(FRACTIONS),):
            aniso[i] = a
        h = (dict(r.attrs).get("homogeneity") if r is not None else None) or {}
        for s in hom:
            if isinstance(h.get(f"{s}_mean"), (int, float)):
                hom[s][i] = h[f"{s}_mean"]
    usable = [u is not None and np.isfinite(u[:, :k]).all() for u in vecs]
    for i in range(S):
        if k and usable[i] and usable[-1]:
            final[i] = subspace_cosines(vecs[i], vecs[-1], k)
        if k and i + 1 < S and usable[i] and usable[i + 1]:
            nxt[i] = subspace_cosines(vecs[i], vecs[i + 1], k)
    parent = run_group.require_group(dest)
    data: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
        "step": (("step",), np.asarray(steps, dtype=np.int64)),
        "rank": (("rank",), np.arange(1, TOP_EIGVALS + 1, dtype=np.int32)),
        "fraction": (("fraction",), np.asarray(FRACTIONS, dtype=np.float64)),
        "angle": (("angle",), np.arange(1, final.shape[1] + 1, dtype=np.int32)),
        "top_eigvals": (("step", "rank"), top),
        "anisotropy_global": (("step", "fraction"), aniso),
        "homogeneity_log_mean": (("step",), hom["log"]),
        "homogeneity_lin_mean": (("step",), hom["lin"]),
        "alignment_final": (("step", "angle"), final),
        "alignment_next": (("step", "angle"), nxt),
    }
    parent.attrs.update({"state": "reducing"})
    for name, (dims, arr) in data.items():
        stored = parent.create_array(name, shape=arr.shape, dtype=arr.dtype, dimension_names=dims, overwrite=True,
                                     fill_value=-1 if arr.dtype.kind == "i" else np.nan)
        stored[...] = arr
    summary = {"steps": steps, "labels": labels, "k": k,
               "alignment_final_mean_sq": [float(np.mean(np.square(row))) for row in final],
               "anisotropy_99": [int(x) for x in aniso[:, FRACTIONS.index(0.99)]]}
    parent.attrs.update({**summary, "state": "complete",
                         "reduced_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return summary
