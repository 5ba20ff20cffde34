"""The homogeneity reducer against the paper's pairwise numpy loop; prints one JSON object.

    python bench/homogeneity_reducer.py [--n 300] [--tile 64] [--cache FILE] [--ray]

N metrics of ``dcgan-faces`` with MSE (exact method) are computed once and cached
(``torch.save`` of plain tensors, read back with ``weights_only=True``). Both
sides use the same float64 arrays: the loop reads them from memory, the reducer
from a temporary Zarr store laid out as a sweep writes it (reading included).
The paper's loop: for each ordered pair (i, j), ``v = diag(U_i^T H_j U_i)`` and
``np.corrcoef`` on log10 (positive entries) and on the linear scale.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr


def metrics(n: int, cache: Path) -> torch.Tensor:
    """(n, 100, 100) float32 metrics of dcgan-faces codes 0..n-1 (seed 0) under MSE."""
    if cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved["H"].shape[0] >= n:
            return saved["H"][:n]
    from geometry_core.distances import load_distance
    from geometry_core.generators import load_generator
    from geometry_core.metric import metric_tensor

    G, d = load_generator("dcgan-faces"), load_distance("mse")
    z = G.sample(n, seed=0)
    H = torch.cat([metric_tensor(G, d, z[a:a + 10]) for a in range(0, n, 10)])
    torch.save({"z": z, "H": H}, cache)
    return H


def paper_loop(H: np.ndarray, U: np.ndarray, L: np.ndarray, pairs) -> tuple[np.ndarray, np.ndarray]:
    """The reference: a Python loop over pairs (i, j), numpy per pair."""
    n = H.shape[0]
    c_log = np.full((n, n), np.nan)
    c_lin = np.full((n, n), np.nan)
    for i, j in pairs:
        v = np.diag(U[i].T @ H[j] @ U[i])
        ok = (v > 0) & (L[j] > 0)
        c_log[i, j] = np.corrcoef(np.log10(v[ok]), np.log10(L[j][ok]))[0, 1]
        c_lin[i, j] = np.corrcoef(v, L[j])[0, 1]
    return c_log, c_lin


def write_store(path: str, H: np.ndarray, U: np.ndarray, L: np.ndarray, chunk: int) -> zarr.Group:
    g = zarr.open_group(path, mode="a", zarr_format=3).require_group("bench/dcgan-faces/default/mse")
    n, d = L.shape
    for name, x, dims in (("z", np.zeros((n, d)), ("code", "dim")), ("eigvals", L, ("code", "eig")),
                          ("eigvecs", U, ("code", "dim", "eig")), ("hessian", H, ("code", "dim", "dim2"))):
        g.create_array(name, shape=x.shape, chunks=(chunk, *x.shape[1:]), dtype="float64", fill_value=0.0,
                       dimension_names=dims, overwrite=True)[:] = x
    n_chunks = -(-n // chunk)
    g.create_array("done", shape=(n_chunks,), chunks=(1,), dtype="uint8", fill_value=0,
                   dimension_names=("chunk",), overwrite=True)[:] = 1
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gangeo-bench-dcgan-mse.pt")
    ap.add_argument("--loop-pairs", type=int, default=0, help="time the loop on this many pairs (0: all)")
    ap.add_argument("--ray", action="store_true", help="also time the reducer as Ray tasks (2 CPUs)")
    args = ap.parse_args()

    from cluster.reduce import reduce_group
    from geometry_core.spectrum import eigen

    t0 = time.perf_counter()
    H32 = metrics(args.n, args.cache)
    t_metrics = time.perf_counter() - t0
    H = H32.double()
    L, U = eigen(H)
    Hn, Un, Ln = H.numpy(), U.numpy(), L.numpy()

    n = args.n
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    if args.loop_pairs and args.loop_pairs < len(pairs):
        # A random sample of pairs, timed and scaled to all N(N-1): the loop's cost per pair is constant.
        rng = np.random.default_rng(0)
        pairs = [pairs[k] for k in rng.choice(len(pairs), args.loop_pairs, replace=False)]
    t0 = time.perf_counter()
    ref_log, ref_lin = paper_loop(Hn, Un, Ln, pairs)
    t_loop = (time.perf_counter() - t0) * n * (n - 1) / len(pairs)

    out = {"n": args.n, "d": Hn.shape[1], "tile": args.tile, "torch_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "metrics_seconds": round(t_metrics, 2),
           "paper_loop_seconds": round(t_loop, 3),
           "paper_loop_pairs_timed": len(pairs), "paper_loop_extrapolated": len(pairs) < n * (n - 1)}
    with tempfile.TemporaryDirectory() as tmp:
        g = write_store(tmp, Hn, Un, Ln, chunk=16)
        t0 = time.perf_counter()
        reduce_group(g, reducers=("homogeneity",), tile=args.tile, use_ray=False)
        t_red = time.perf_counter() - t0
        got_log = g["reduce/homogeneity_log"][:]
        got_lin = g["reduce/homogeneity_lin"][:]
        out["reducer_seconds"] = round(t_red, 3)
        out["speedup"] = round(t_loop / t_red, 2)
        if args.ray:
            import ray

            from cluster.ray_runtime import init_ray

            init_ray(None, {}, num_cpus=2)
            reduce_group(g, reducers=("homogeneity",), tile=args.tile, use_ray=True)  # warm the workers
            t0 = time.perf_counter()
            reduce_group(g, reducers=("homogeneity",), tile=args.tile, use_ray=True)
            t_ray = time.perf_counter() - t0
            ray.shutdown()
            out["reducer_ray_seconds"] = round(t_ray, 3)
            out["speedup_ray"] = round(t_loop / t_ray, 2)
    # Agreement on the pairs the loop computed.
    out["max_abs_diff_log"] = float(np.nanmax(np.abs(got_log - ref_log)))
    out["max_abs_diff_lin"] = float(np.nanmax(np.abs(got_lin - ref_lin)))
    out["homogeneity_log_mean"] = float(np.nanmean(got_log))
    out["homogeneity_lin_mean"] = float(np.nanmean(got_lin))
    out["target_speedup"] = 20.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
