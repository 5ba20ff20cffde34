"""Inversion benchmark on dcgan-faces: plain Adam against Adam in the global metric's
eigenbasis (rotation, and power 0.5 scaling) and BasinCMA in both bases, at an equal
evaluation budget per target. Prints one JSON object.

Targets are images G made from held-out codes (seed 10_000, disjoint from the
metric's codes, seed 0); every method starts from the same codes (seed 20_000).
All targets are inverted at once (independent problems batched through G).

    python bench/inversion.py [--targets 20] [--budget 200] [--metric-codes 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from geometry_core.distances import load_distance
from geometry_core.generators.dcgan_faces import load_dcgan_faces
from geometry_core.inversion import InversionOptions, invert_many, metric_eigenbasis


def methods(eigvals, eigvecs, population: int, inner_steps: int) -> dict:
    rot = dict(basis=eigvecs)
    cma = dict(optimizer="basincma", population=population, inner_steps=inner_steps)
    return {
        "adam": {},
        "adam-eigenbasis": rot,
        "adam-eigenbasis-power0.5": dict(basis=eigvecs, eigvals=eigvals, power=0.5),
        "basincma": cma,
        "basincma-eigenbasis": {**cma, **rot},
    }


def lpips_available() -> tuple[bool, str]:
    """Whether lpips-alex's ImageNet backbone is cached (checked without a download attempt)."""
    from geometry_core.distances.lpips_distance import backbone_cache_path

    path = backbone_cache_path("alex")
    return (True, "") if path.is_file() else (False, f"{path} not cached")


def run_distance(name, G, args) -> dict:
    d = load_distance(name).to(args.device)
    t0 = time.perf_counter()
    eigvals, eigvecs = metric_eigenbasis(G, d, n_codes=args.metric_codes, seed=0)
    out = {"metric_seconds": time.perf_counter() - t0, "eigvals_top5": eigvals[:5].tolist(),
           "eigval_ratio_max_min": float(eigvals[0] / eigvals[-1].clamp_min(1e-30)), "methods": {}}
    with torch.no_grad():
        targets = G(G.sample(args.targets, seed=10_000).to(args.device))
    z_init = G.sample(args.targets, seed=20_000).to(args.device)
    for name_m, kw in methods(eigvals, eigvecs, args.population, args.inner_steps).items():
        t0 = time.perf_counter()
        res = invert_many(G, d, targets, InversionOptions(steps=args.budget, lr=args.lr, seed=0, **kw), z_init=z_init)
        finals = np.array([r.value for r in res])
        assert all(r.evaluations == args.budget for r in res)
        out["methods"][name_m] = {
            "final_mean": float(finals.mean()), "final_sem": float(finals.std(ddof=1) / np.sqrt(len(finals))),
            "final_median": float(np.median(finals)),
            "initial_mean": float(np.mean([r.trajectory[0] for r in res])),
            "seconds": time.perf_counter() - t0,
        }
        print(f"{name} {name_m}: {finals.mean():.4g} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=20)
    ap.add_argument("--budget", type=int, default=200, help="evaluations per target")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--inner-steps", type=int, default=5)
    ap.add_argument("--metric-codes", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    G = load_dcgan_faces(device=args.device)
    report = {"generator": "dcgan-faces", "targets": args.targets, "budget": args.budget, "lr": args.lr,
              "population": args.population, "inner_steps": args.inner_steps, "device": args.device,
              "torch_threads": torch.get_num_threads(), "distances": {}}
    report["distances"]["mse"] = run_distance("mse", G, args)
    ok, why = lpips_available()
    if ok:
        report["distances"]["lpips-alex"] = run_distance("lpips-alex", G, args)
    else:
        report["skipped"] = {"lpips-alex": f"backbone not available offline ({why[:160]})"}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
