"""Sweep throughput through Ray and the store against a bare loop over metric_tensor; prints JSON.

    python bench/sweep_throughput.py [--n 32] [--chunk 8]

Same codes (dcgan-faces, seed 0), MSE, exact method, eigen-decomposition, on
this machine's CPUs. The bare loop runs the chunks one after another in this
process with torch at 1 thread and at all threads; the sweep runs
``cluster.driver.run_sweep`` with 1 and with 2 workers (1 CPU, 1 torch thread
each) into a temporary local store, reducers off. Sweep seconds are the
driver's own timing (chunks scheduled to all done, excluding Ray start-up);
the wall time including start-up is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def bare_loop(n: int, chunk: int, threads: int) -> float:
    """Seconds to compute every chunk's metrics and eigen-decomposition in this process."""
    import torch

    from geometry_core.distances import load_distance
    from geometry_core.generators import load_generator
    from geometry_core.metric import metric_tensor
    from geometry_core.spectrum import eigen

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    G, d = load_generator("dcgan-faces"), load_distance("mse")
    z = G.sample(n, seed=0)
    metric_tensor(G, d, z[:1])  # warm-up, as a worker's first chunk is not timed separately either
    t0 = time.perf_counter()
    for a in range(0, n, chunk):
        eigen(metric_tensor(G, d, z[a:a + chunk]))
    seconds = time.perf_counter() - t0
    torch.set_num_threads(before)
    return seconds


def sweep(n: int, chunk: int, workers: int) -> dict:
    """run_sweep with ``workers`` workers into a fresh store; the driver's timing and the wall time."""
    import ray

    from cluster.driver import run_sweep
    from cluster.spec import parse_spec

    with tempfile.TemporaryDirectory() as tmp:
        spec = parse_spec({
            "name": f"bench-{workers}w", "store": tmp, "generators": [{"name": "dcgan-faces"}],
            "targets": ["mse"], "codes": {"n": n, "seed": 0}, "method": "exact", "chunk_size": chunk,
            "keep": {"hessian": False, "eigvecs": True},
            "reducers": {"global": False, "homogeneity": False, "anisotropy": False},
            "resources": {"workers": workers, "cpus_per_worker": 1},
        })
        t0 = time.perf_counter()
        summary = run_sweep(spec, progress=False)
        wall = time.perf_counter() - t0
    if ray.is_initialized():
        ray.shutdown()
    if summary["status"] != "complete":
        raise SystemExit(f"sweep with {workers} workers did not complete: {summary.get('failed')}")
    return {"seconds": summary["seconds"], "wall_seconds": round(wall, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=8)
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    bare1 = bare_loop(args.n, args.chunk, 1)
    bare_all = bare_loop(args.n, args.chunk, cpus)
    one = sweep(args.n, args.chunk, 1)
    two = sweep(args.n, args.chunk, 2)
    out = {
        "n": args.n, "chunk": args.chunk, "cpu_count": cpus,
        "bare_loop_seconds_1_thread": round(bare1, 3), f"bare_loop_seconds_{cpus}_threads": round(bare_all, 3),
        "sweep_1_worker": one, "sweep_2_workers": two,
        "points_per_second_1_worker": round(args.n / one["seconds"], 3),
        "points_per_second_2_workers": round(args.n / two["seconds"], 3),
        # Throughput of the 1-worker sweep relative to the bare loop (>= 0.9 wanted).
        "ratio_1_worker_vs_bare_1_thread": round(bare1 / one["seconds"], 3),
        f"ratio_1_worker_vs_bare_{cpus}_threads": round(bare_all / one["seconds"], 3),
        # Scaling from 1 to 2 workers (>= 1.7 wanted on 2 cores).
        "speedup_2_vs_1_workers": round(one["seconds"] / two["seconds"], 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
