"""`make bench-gpu`: the real-size metric table on CUDA, then a sweep on GPU-pinned workers.

One JSON file (``--out``) holds both parts, rewritten as each case finishes so a
run stopped by its time limit keeps what it measured. The real-size part stops
starting new cases after ``--budget`` seconds (the sweep keeps about two minutes);
the whole run is meant to stay under 8 minutes on one H100.

    python bench/bench_gpu.py --out bench/results/real_size_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_sweep  # noqa: E402
import real_size  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results/real_size_gpu.json")
    p.add_argument("--budget", type=float, default=330.0, help="seconds for the real-size cases")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench-gpu: no CUDA device visible; this benchmark needs one", file=sys.stderr)
        raise SystemExit(2)
    t0 = time.perf_counter()
    part = Path(args.out).with_suffix(".cases.json")
    table = real_size.main(["--device", "cuda", "--budget", str(args.budget), "--check-fp64", "--out", str(part)])
    report = {"real_size": table}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    report["sweep"] = gpu_sweep.main(["--device", "cuda", "--n", "256", "--targets", "mse", "ssim"])
    report["seconds_total"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    part.unlink(missing_ok=True)


if __name__ == "__main__":
    os.environ.setdefault("GANGEO_OFFLINE", "1")
    main()
