"""Driver memory of a sweep at N = 200 and N = 2,000 codes: it must stay flat.

Usage::

    .venv/bin/python bench/driver_memory.py            # both sizes, one process each
    .venv/bin/python bench/driver_memory.py --n 2000   # one size

Each size runs in a fresh process (peak RSS is per process): embedded Ray with 2
workers, a local store, G(z) = tanh(z) shaped to 3x2x2 images (D = 12) with MSE,
chunks of 4 codes, so the store and Ray carry the load while the geometry is
cheap. Reports the driver's peak RSS (``resource.getrusage``) and the peak of
Python allocations inside ``run_sweep`` (``tracemalloc``), as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

SIZES = (200, 2000)


def one(n: int, chunk: int) -> dict:
    from cluster.driver import run_sweep
    from cluster.spec import parse_spec

    spec = parse_spec({
        "name": f"mem{n}", "targets": ["mse"], "codes": {"n": n, "seed": 0}, "chunk_size": chunk,
        "generators": [{"name": "module", "spaces": ["z"], "options": {
            "arch": "torch.nn:Tanh", "latent_dim": 12, "input_shape": [3, 2, 2], "allow_import": True}}],
        "keep": {"hessian": False, "eigvecs": True},
        "reducers": {"global": False, "homogeneity": False, "anisotropy": False},
        "resources": {"workers": 2}})
    with tempfile.TemporaryDirectory() as tmp:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        t0 = time.perf_counter()
        summary = run_sweep(spec, store=str(Path(tmp) / "s"), progress=False)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {"n": n, "chunks": summary["chunks"], "status": summary["status"], "seconds": round(seconds, 2),
            "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "driver_rss_before_run_mib": round(rss_before / 1024, 1),
            "driver_tracemalloc_peak_mib": round(peak / 2**20, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="one size in this process")
    ap.add_argument("--chunk", type=int, default=4)
    args = ap.parse_args()
    if args.n:
        print(json.dumps(one(args.n, args.chunk)))
        return
    results = []
    for n in SIZES:
        out = subprocess.run([sys.executable, __file__, "--n", str(n), "--chunk", str(args.chunk)],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    small, large = results
    print(json.dumps({"benchmark": "driver_memory", "sizes": results,
                      "rss_ratio_large_over_small": round(
                          large["driver_peak_rss_mib"] / small["driver_peak_rss_mib"], 3),
                      "tracemalloc_ratio_large_over_small": round(
                          large["driver_tracemalloc_peak_mib"] / max(small["driver_tracemalloc_peak_mib"], 1e-9), 3)},
                     indent=2))


if __name__ == "__main__":
    main()
