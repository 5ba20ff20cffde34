"""A sweep on GPU-pinned workers: which device each worker used, codes per second.

Runs the product's driver (embedded Ray, ``gpus_per_worker: 1``, one worker per
GPU) over ``--n`` codes of the shipped face DCGAN into a temporary local store
and prints the run summary's figures as JSON. ``--device cpu`` runs the same
sweep on CPU workers, to check the script where no GPU is present.

    python bench/gpu_sweep.py --n 256 --targets mse ssim
    python bench/gpu_sweep.py --device cpu --n 16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from cluster.driver import run_sweep
from cluster.spec import parse_spec


def sweep_spec(n: int, chunk_size: int, targets: list[str], device: str) -> dict:
    resources = {"gpus_per_worker": 1, "cpus_per_worker": 1} if device == "cuda" else {"workers": 2}
    return {"name": "gpu-sweep", "generators": [{"name": "dcgan-faces"}], "targets": targets,
            "codes": {"n": n, "seed": 0}, "chunk_size": chunk_size, "method": "exact",
            "keep": {"hessian": False, "eigvecs": True},
            "reducers": {"global": True, "homogeneity": True, "anisotropy": True}, "resources": resources}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--targets", nargs="+", default=["mse"])
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gangeo-gpu-sweep-") as store:
        spec = parse_spec(sweep_spec(args.n, args.chunk_size, args.targets, args.device))
        summary = run_sweep(spec, store=store, progress=False)
    codes = args.n * len(args.targets)
    out = {"status": summary["status"], "codes": args.n, "targets": args.targets, "metrics": codes,
           "seconds": summary["seconds"], "metrics_per_second": round(codes / summary["seconds"], 2),
           "workers": summary["workers"], "worker_info": summary["worker_info"],
           "failed": summary["failed"], "reduced": sorted(summary["reduce"] or {})}
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return out


if __name__ == "__main__":
    main()
