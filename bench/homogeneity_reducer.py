"""The homogeneity reducer, old against new, in pairs per second at D=100 and D=512; prints one JSON object.

    python bench/homogeneity_reducer.py [--dims 64 100 512] [--n 192 96 24] [--tiles 64 32 8]
        [--threads 1] [--repeats 3]
    python bench/homogeneity_reducer.py --device cuda --dims 512 --n 256 --tiles 64 --no-baseline

Each case writes N synthetic metrics (random orthonormal eigenbases, spectra falling
from 1 to 1e-6, as a sweep keeping eigvecs stores them) to a temporary Zarr store and
reduces the homogeneity twice, in this process:

- ``old``: the reducer before one product per unordered pair (kept here only as the
  baseline): one task per ordered tile, ``H_j`` rebuilt as ``V diag(l) Vᵀ`` and
  ``H_j U_i`` formed for every ordered pair;
- ``overlaps`` (D <= 64 only): the reducer with one product ``U_iᵀ U_j`` per
  unordered pair giving both ordered entries, as before the packed form;
- ``new``: :func:`cluster.reduce.reduce_group` as it is: at D <= 64 packed
  symmetric outer products against packed metrics, above that the overlaps.

Both read and write the store the same way, so ``speedup`` is the ratio of the two
times measured in the same run, alternating, best of ``--repeats`` each (``--threads 1``:
one BLAS thread, as a Ray task with ``num_cpus=1`` runs). Agreement: old against new on every entry, and new against the
paper's loop (``v = diag(U_iᵀ H_j U_i)``, ``np.corrcoef``) on a sample of pairs.
The JSON also goes to ``--out`` (default ``bench/results/homogeneity_reducer.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

GROUP = "bench/synthetic/default/mse"
NAMES = ("homogeneity_log", "homogeneity_lin", "homogeneity_masked")


def synthetic(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 eigenvalues (n, d), descending from ~1 to ~1e-6, and random orthonormal eigenvectors (n, d, d)."""
    gen = torch.Generator().manual_seed(seed)
    vecs, _ = torch.linalg.qr(torch.randn(n, d, d, generator=gen, dtype=torch.float64))
    vals = torch.logspace(0, -6, d, dtype=torch.float64) * (1 + 0.1 * torch.rand(n, d, generator=gen,
                                                                                  dtype=torch.float64))
    return vals.sort(dim=1, descending=True).values, vecs


def write_store(path: str, vals: torch.Tensor, vecs: torch.Tensor, chunk: int) -> zarr.Group:
    """A target group as a sweep keeping eigvecs (not hessian) writes it, every chunk done."""
    g = zarr.open_group(path, mode="a", zarr_format=3).require_group(GROUP)
    n, d = vals.shape
    z = np.random.default_rng(1).standard_normal((n, d))
    for name, x, dims in (("z", z, ("code", "dim")), ("eigvals", vals.numpy(), ("code", "eig")),
                          ("eigvecs", vecs.numpy(), ("code", "dim", "eig"))):
        g.create_array(name, shape=x.shape, chunks=(chunk, *x.shape[1:]), dtype="float64", fill_value=0.0,
                       dimension_names=dims, overwrite=True)[:] = x
    g.create_array("done", shape=(-(-n // chunk),), chunks=(1,), dtype="uint8", fill_value=0,
                   dimension_names=("chunk",), overwrite=True)[:] = 1
    return g


# ---- the baseline: the reducer's tiles before one product per unordered pair ----


def old_tile(view, rows: tuple[int, int], cols: tuple[int, int], dtype):
    """One ordered homogeneity tile as the reducer computed it: H_j rebuilt, H_j U_i per ordered pair."""
    from cluster.reduce import TileStats
    from geometry_core.homogeneity import homogeneity_tile

    (r0, r1), (c0, c1) = rows, cols
    shape = (r1 - r0, c1 - c0)
    out_log, out_lin = np.full(shape, np.nan), np.full(shape, np.nan)
    out_masked = np.full(shape, -1, dtype=np.int32)
    ri, cj = np.flatnonzero(view.used[r0:r1]), np.flatnonzero(view.used[c0:c1])
    if ri.size and cj.size:
        t_log, t_lin, t_masked = homogeneity_tile(view.eigvecs(r0, r1, dtype), view.hessians(c0, c1, dtype),
                                                  view.eigvals(c0, c1, dtype))
        sel = np.ix_(ri, cj)
        out_log[sel], out_lin[sel] = t_log.double().numpy(), t_lin.double().numpy()
        out_masked[sel] = t_masked.numpy().astype(np.int32)
    gi, gj = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    diag = gi == gj
    out_log[diag], out_lin[diag], out_masked[diag] = np.nan, np.nan, -1
    red = view.group["reduce"]
    red["homogeneity_log"][r0:r1, c0:c1] = out_log
    red["homogeneity_lin"][r0:r1, c0:c1] = out_lin
    red["homogeneity_masked"][r0:r1, c0:c1] = out_masked
    return TileStats.of(out_log, out_lin, out_masked)


def old_reduce(g: zarr.Group, tile: int) -> dict:
    """The old homogeneity reducer, in process: arrays created, then every ordered tile."""
    from cluster.reduce import TileStats
    from cluster.view import GroupView

    view = GroupView.of(g.path, g)
    n = view.layout.n
    red = g.require_group("reduce")
    for name, dt, fill in zip(NAMES, ("float64", "float64", "int32"), (np.nan, np.nan, -1)):
        red.create_array(name, shape=(n, n), chunks=(tile, tile), dtype=dt, fill_value=fill,
                         dimension_names=("code_i", "code_j"), overwrite=True)
    blocks = [(a, min(a + tile, n)) for a in range(0, n, tile)]
    stats = sum((old_tile(view, r, c, torch.float64) for r in blocks for c in blocks), TileStats())
    return stats.summary()


def paper_loop(vals: np.ndarray, vecs: np.ndarray, pairs) -> list[tuple[float, float]]:
    """The reference on the given ordered pairs: v = diag(U_iᵀ H_j U_i), np.corrcoef on log10 and linear."""
    out = []
    for i, j in pairs:
        h_j = (vecs[j] * vals[j]) @ vecs[j].T
        v = np.diag(vecs[i].T @ h_j @ vecs[i])
        ok = (v > 0) & (vals[j] > 0)
        out.append((np.corrcoef(np.log10(v[ok]), np.log10(vals[j][ok]))[0, 1], np.corrcoef(v, vals[j])[0, 1]))
    return out


def case(n: int, d: int, tile: int, device: str, baseline: bool, loop_pairs: int, repeats: int) -> dict:
    from cluster.executor import InProcess
    from cluster.reduce import reduce_group

    vals, vecs = synthetic(n, d)
    pairs = n * (n - 1)
    out: dict = {"n": n, "d": d, "tile": tile, "ordered_pairs": pairs, "device": device, "repeats": repeats}
    old = None
    ex = InProcess(device="auto" if device == "cuda" else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        g = write_store(tmp, vals, vecs, chunk=min(16, tile))
        reduce_group(g, reducers=("homogeneity",), tile=tile, ex=ex)  # warm-up (CUDA context, allocator)
        # Old, overlaps and new alternate and each keeps its best time: a shared machine's load drifts over a run.
        t_old = t_new = t_overlaps = math.inf
        hom = sys.modules["geometry_core.homogeneity"]
        packed = d <= hom._KRON_MAX_D
        for _ in range(repeats):
            if baseline:
                t0 = time.perf_counter()
                old_summary = old_reduce(g, tile)
                t_old = min(t_old, time.perf_counter() - t0)
                old = {k: g["reduce"][k][:] for k in NAMES}
            if baseline and packed:  # the overlap products U_iᵀ U_j at this D, as before the packed form
                saved, hom._KRON_MAX_D = hom._KRON_MAX_D, 0
                try:
                    t0 = time.perf_counter()
                    reduce_group(g, reducers=("homogeneity",), tile=tile, ex=ex)
                    t_overlaps = min(t_overlaps, time.perf_counter() - t0)
                    overlaps = {k: g["reduce"][k][:] for k in NAMES}
                finally:
                    hom._KRON_MAX_D = saved
            t0 = time.perf_counter()
            new_summary = reduce_group(g, reducers=("homogeneity",), tile=tile, ex=ex)["homogeneity"]
            t_new = min(t_new, time.perf_counter() - t0)
        new = {k: g["reduce"][k][:] for k in NAMES}
        out["kernel"] = "packed outer products" if packed else "overlaps U_iᵀ U_j"
    if baseline:
        out.update(old_seconds=round(t_old, 3), old_pairs_per_s=round(pairs / t_old, 1))
    out.update(new_seconds=round(t_new, 3), new_pairs_per_s=round(pairs / t_new, 1))
    if math.isfinite(t_overlaps):
        out.update(overlaps_seconds=round(t_overlaps, 3), overlaps_pairs_per_s=round(pairs / t_overlaps, 1),
                   speedup_over_overlaps=round(t_overlaps / t_new, 2),
                   max_abs_diff_overlaps_new={k: float(np.nanmax(np.abs(new[k] - overlaps[k]))) for k in NAMES[:2]})
    if baseline:
        out["speedup"] = round(t_old / t_new, 2)
        out["max_abs_diff_old_new"] = {k: float(np.nanmax(np.abs(new[k] - old[k]))) for k in NAMES[:2]}
        out["masked_equal_old_new"] = bool(np.array_equal(new[NAMES[2]], old[NAMES[2]]))
        out["summary_equal_old_new"] = all(
            np.isclose(old_summary[k], new_summary[k], rtol=1e-9, atol=0) for k in old_summary)
    rng = np.random.default_rng(0)
    sample = [(int(i), int(j)) for i, j in rng.integers(0, n, size=(loop_pairs, 2)) if i != j]
    ref = paper_loop(vals.numpy(), vecs.numpy(), sample)
    out["max_abs_diff_paper_loop"] = max(
        max(abs(new["homogeneity_log"][i, j] - a), abs(new["homogeneity_lin"][i, j] - b))
        for (i, j), (a, b) in zip(sample, ref))
    out["paper_loop_pairs_checked"] = len(sample)
    out["homogeneity_log_mean"] = new_summary["log_mean"]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 100, 512])
    ap.add_argument("--n", type=int, nargs="+", default=[192, 96, 24], help="codes per case (one per --dims)")
    ap.add_argument("--tiles", type=int, nargs="+", default=[64, 32, 8],
                    help="tile per case (the old tile holds tile² D² floats: 8 at D=512 keeps it at 128 MiB)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as a Ray task with num_cpus=1)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the new tiles run")
    ap.add_argument("--no-baseline", action="store_true", help="time the new reducer only")
    ap.add_argument("--repeats", type=int, default=3, help="alternating timings of each; the best counts")
    ap.add_argument("--loop-pairs", type=int, default=200, help="pairs checked against the paper's loop")
    ap.add_argument("--out", default="bench/results/homogeneity_reducer.json", help="also write the JSON here ('': no)")
    args = ap.parse_args(argv)
    if not len(args.dims) == len(args.n) == len(args.tiles):
        ap.error("--dims, --n and --tiles need one value per case")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device visible")
    torch.set_num_threads(args.threads)
    report = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "target_speedup": 2.0,
              "cases": [case(n, d, t, args.device, not args.no_baseline, args.loop_pairs, args.repeats)
                        for d, n, t in zip(args.dims, args.n, args.tiles)]}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    print(json.dumps(main()))
