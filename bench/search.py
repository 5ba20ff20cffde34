"""Gradient-free search benchmark on dcgan-faces: plain CMA-ES against CMA-ES in the
global metric's eigenframe (CMAES-Hessian), equal evaluation budgets, final value
mean ± sem over seeds, on two black-box objectives (both minimised):

- unit: minus the centre activation of one channel of a fixed random-weight
  AlexNet layer on G(z) (a reproducible stand-in for a pretrained CNN);
- target: the MSE distance to an image G made from a held-out code.

Prints one JSON object.

    python bench/search.py [--budget 600] [--seeds 10] [--popsize 12] [--sigma0 1.0]
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
from geometry_core.inversion import metric_eigenbasis
from geometry_core.search import cma_search, random_alexnet, target_distance_objective, unit_activation_objective


def summarize(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sem": float(v.std(ddof=1) / np.sqrt(len(v))), "values": v.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--popsize", type=int, default=12)
    ap.add_argument("--sigma0", type=float, default=1.0)
    ap.add_argument("--power", type=float, default=0.5)
    ap.add_argument("--cutoff", type=int, default=None)
    ap.add_argument("--metric-codes", type=int, default=32)
    ap.add_argument("--units", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    G = load_dcgan_faces(device=args.device)
    d = load_distance("mse").to(args.device)
    t0 = time.perf_counter()
    eigvals, eigvecs = metric_eigenbasis(G, d, n_codes=args.metric_codes, seed=0)
    report = {"generator": "dcgan-faces", "budget": args.budget, "seeds": args.seeds, "popsize": args.popsize,
              "sigma0": args.sigma0, "power": args.power, "cutoff": args.cutoff,
              "metric_seconds": time.perf_counter() - t0, "objectives": {}}
    cnn = random_alexnet(0).to(args.device)
    with torch.no_grad():
        target = G(G.sample(1, seed=10_000).to(args.device))[0]
    objectives = {f"unit:features.10:{u}": unit_activation_objective(G, cnn, "features.10", u, input_size=64)
                  for u in args.units}
    objectives["target:mse"] = target_distance_objective(G, d, target)
    frames = {"cma": {}, "cma-hessian": dict(eigvecs=eigvecs, eigvals=eigvals, power=args.power, cutoff=args.cutoff)}
    for oname, f in objectives.items():
        report["objectives"][oname] = {}
        for mname, frame in frames.items():
            t0 = time.perf_counter()
            finals = [cma_search(f, G.latent_dim, budget=args.budget, seed=s, sigma0=args.sigma0,
                                 popsize=args.popsize, **frame).value for s in range(args.seeds)]
            report["objectives"][oname][mname] = {**summarize(finals), "seconds": time.perf_counter() - t0}
            print(f"{oname} {mname}: {np.mean(finals):.4g} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
