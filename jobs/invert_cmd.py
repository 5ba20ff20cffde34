"""`gangeo invert` and `gangeo search`: inversion and gradient-free search with the metric.

Example::

    gangeo invert --generator dcgan-faces --distance mse --target-seed 123 \\
        --basis global --optimizer adam --steps 200 --out inv/
    gangeo search --objective unit --budget 600 --seeds 10

`invert` prints a JSON summary (and with ``--out`` writes ``result.json``,
``z.npy``, ``target.png``, ``reconstruction.png``). `search` prints JSON with
the final objective value mean ± sem over seeds for plain and metric CMA-ES.
The global metric for ``--basis global`` is computed from ``--metric-codes``
codes drawn with ``--metric-seed``, or loaded from ``--metric FILE`` (a (D, D)
.npy matrix), or read from a reduced run with ``--metric run:NAME[/group]`` (its stored
eigenvectors, checked against ``--generator``: :mod:`cluster.run_metric`).
Errors: one line on stderr and the exit code of their kind, nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from cluster.progress import Steps
from geometry_core.errors import UsageError
from jobs.command import check_out_dir, run_module, store_args
from jobs.output import dumps_json, print_json

__all__ = ["DEFAULTS", "add_parser", "main", "run_invert", "run_search"]

DEFAULTS = {
    "generator": "dcgan-faces", "distance": "mse", "target_seed": 123, "init_seed": 0, "steps": 200,
    "lr": 0.05, "population": 8, "inner_steps": 5, "power": 0.0, "metric_codes": 32, "metric_seed": 0,
    "budget": 600, "seeds": 10, "popsize": 12, "sigma0": 0.5, "search_power": 0.5, "layer": "features.10",
    "unit": 0, "cnn_seed": 0, "input_size": 64,
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``invert`` and ``search`` on a ``gangeo`` subparsers object."""
    p = subparsers.add_parser("invert",
                              help="invert an image with Adam or BasinCMA, optionally in the metric's eigenbasis")
    _common(p, basis="global")
    p.add_argument("--target-seed", type=int, default=DEFAULTS["target_seed"],
                   help="seed of the code that makes the target")
    p.add_argument("--target-image", default=None, help="PNG to invert instead (resized to G's size)")
    p.add_argument("--init-seed", type=int, default=DEFAULTS["init_seed"],
                   help="seed of the initial code and of CMA-ES")
    p.add_argument("--optimizer", choices=("adam", "basincma"), default="adam")
    p.add_argument("--power", type=float, default=DEFAULTS["power"], help="scale direction i by eigval_i^-power")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="evaluation budget")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--population", type=int, default=DEFAULTS["population"])
    p.add_argument("--inner-steps", type=int, default=DEFAULTS["inner_steps"])
    p.add_argument("--out", default=None, help="directory for result.json, z.npy and PNGs")
    p.set_defaults(func=run_invert)

    q = subparsers.add_parser("search", help="CMA-ES with and without the metric's eigenframe on a black-box objective")
    _common(q, basis="both")
    q.add_argument("--objective", choices=("unit", "target"), default="unit")
    q.add_argument("--target-seed", type=int, default=DEFAULTS["target_seed"],
                   help="target code seed (--objective target)")
    q.add_argument("--layer", default=DEFAULTS["layer"], help="module of the random-weight AlexNet (--objective unit)")
    q.add_argument("--unit", type=int, default=DEFAULTS["unit"])
    q.add_argument("--cnn-seed", type=int, default=DEFAULTS["cnn_seed"])
    q.add_argument("--input-size", type=int, default=DEFAULTS["input_size"], help="CNN input size (pixels)")
    q.add_argument("--budget", type=int, default=DEFAULTS["budget"], help="evaluations per run")
    q.add_argument("--seeds", type=int, default=DEFAULTS["seeds"], help="runs per method")
    q.add_argument("--popsize", type=int, default=DEFAULTS["popsize"])
    q.add_argument("--sigma0", type=float, default=DEFAULTS["sigma0"])
    q.add_argument("--power", type=float, default=DEFAULTS["search_power"])
    q.add_argument("--cutoff", type=int, default=None, help="top directions scaled by eigval^-power (default all)")
    q.set_defaults(func=run_search)


def _common(p: argparse.ArgumentParser, *, basis: str) -> None:
    from cluster.defaults import DEFAULT_STORE
    from jobs.axes_cmd import DISTANCE_HELP

    p.add_argument("--generator", default=DEFAULTS["generator"])
    p.add_argument("--space", default=None)
    p.add_argument("--distance", default=None, help=DISTANCE_HELP)
    p.add_argument("--basis", choices=("global", "none", "both"), default=basis,
                   help="eigenbasis of the global metric, plain coordinates, or both (search only)")
    p.add_argument("--metric", default=None,
                   help=".npy (D, D) global metric, or run:NAME[/GROUP] (a reduced run's in --store), "
                        "to use instead of computing it")
    store_args(p, default=DEFAULT_STORE)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--metric-codes", type=int, default=DEFAULTS["metric_codes"])
    p.add_argument("--metric-seed", type=int, default=DEFAULTS["metric_seed"])


def _load(args):
    """(G, d, stored): a ``--metric run:...`` is read first, so ``d`` is its group's distance
    unless ``--distance`` names it (another one is refused)."""
    from geometry_core import load_generator
    from jobs.axes_cmd import metric_distance, stored_metric

    G = load_generator(args.generator, space=args.space)
    stored = stored_metric(args, G)
    return G, metric_distance(args, G, stored), stored


def _eigenbasis(args, G, d, stored, steps):
    """(eigvals, eigvecs) of the global metric, from --metric (a .npy file or a stored run) or computed."""
    import torch

    from geometry_core.inversion import metric_eigenbasis
    from geometry_core.spectrum import eigen

    if stored is not None:
        return stored.eigvals, stored.eigvecs
    if args.metric is None:
        steps.say(f"global metric of {d.name} from {args.metric_codes} codes (seed {args.metric_seed})")
        return metric_eigenbasis(G, d, n_codes=args.metric_codes, seed=args.metric_seed)
    try:
        H = torch.as_tensor(np.load(args.metric, allow_pickle=False), dtype=torch.float64)
    except (OSError, ValueError) as exc:  # absent, not .npy, or pickled objects
        raise UsageError(f"--metric {args.metric}: cannot read a .npy matrix ({exc})") from None
    if H.shape != (G.latent_dim, G.latent_dim):
        raise UsageError(f"--metric {args.metric}: expected a ({G.latent_dim}, {G.latent_dim}) matrix, "
                         f"got {tuple(H.shape)}")
    return eigen(H)


def _read_png(path: str, size: tuple[int, int]):
    import torch
    from torchvision.io import ImageReadMode, read_image

    if not os.path.isfile(path):
        raise UsageError(f"--target-image {path} does not exist")
    try:
        x = read_image(path, mode=ImageReadMode.RGB).float().unsqueeze(0) / 127.5 - 1
    except RuntimeError as exc:  # torchvision's decoders say "Unsupported image file" this way
        raise UsageError(f"--target-image {path}: cannot decode an image ({exc})") from None
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp(-1, 1)


def run_invert(args: argparse.Namespace) -> int:
    """Invert one target; print (and with --out write) the JSON summary."""
    import torch

    from geometry_core.inversion import InversionOptions, invert

    basis = args.basis
    if basis == "both":
        raise UsageError("--basis: invert takes global or none")
    check_out_dir(args.out)  # before any computing: a refused folder costs nothing
    steps = Steps("invert", enabled=not args.quiet)
    G, d, stored = _load(args)
    with torch.no_grad():
        probe = G(G.sample(1, seed=args.target_seed, dtype=G.dtype).to(G.device))
    target = probe[0] if args.target_image is None else _read_png(args.target_image, tuple(probe.shape[-2:]))
    eigvals = eigvecs = None
    if basis == "global":
        eigvals, eigvecs = _eigenbasis(args, G, d, stored, steps)
    options = InversionOptions(basis=eigvecs, eigvals=eigvals, power=args.power, optimizer=args.optimizer,
                               steps=args.steps, lr=args.lr, seed=args.init_seed, population=args.population,
                               inner_steps=args.inner_steps)
    steps.say(f"inverting with {args.optimizer}, {args.steps} evaluations of {d.name}, basis {basis}")
    res = invert(G, d, target.to(dtype=G.dtype, device=G.device), options)
    steps.say(f"distance {float(res.trajectory[0]):.4g} -> {res.value:.4g}")
    summary = {
        "generator": args.generator, "distance": d.name, "optimizer": args.optimizer, "basis": basis,
        "power": args.power, "target": args.target_image or {"seed": args.target_seed},
        "steps": args.steps, "evaluations": res.evaluations, "initial_distance": float(res.trajectory[0]),
        "final_distance": res.value,
    }
    if basis == "global" and args.metric and args.metric.startswith("run:"):
        summary["metric"] = args.metric
    if args.out is not None:
        _write_inversion(args.out, G, target, res, summary)
    print_json(summary, indent=None)
    steps.finished()
    return 0


def _write_inversion(out: str, G, target, res, summary: dict) -> None:
    import torch
    from torchvision.utils import save_image

    os.makedirs(out, exist_ok=True)
    with torch.no_grad():
        recon = G(res.z.unsqueeze(0))[0]
    save_image((target.float().cpu() + 1) / 2, os.path.join(out, "target.png"))
    save_image((recon.float().cpu() + 1) / 2, os.path.join(out, "reconstruction.png"))
    np.save(os.path.join(out, "z.npy"), res.z.double().cpu().numpy())
    np.save(os.path.join(out, "trajectory.npy"), res.trajectory)
    with open(os.path.join(out, "result.json"), "w") as f:
        f.write(dumps_json(summary, indent=1))


def mean_sem(values) -> dict:
    """{"mean", "sem", "n", "values"} of a list of finals (sem with ddof=1)."""
    v = np.asarray(values, dtype=np.float64)
    sem = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "sem": sem, "n": int(len(v)), "values": v.tolist()}


def search_objective(args, G, d):
    """The black-box objective named by --objective (minimised)."""
    import torch

    from geometry_core.search import random_alexnet, target_distance_objective, unit_activation_objective

    if args.objective == "unit":
        return unit_activation_objective(G, random_alexnet(args.cnn_seed), args.layer, args.unit,
                                         input_size=args.input_size)
    with torch.no_grad():
        target = G(G.sample(1, seed=args.target_seed, dtype=G.dtype).to(G.device))[0]
    return target_distance_objective(G, d, target)


def run_search(args: argparse.Namespace) -> int:
    """Plain and/or metric CMA-ES over --seeds runs; print final values mean ± sem."""
    from geometry_core.search import cma_search

    basis = args.basis
    if args.budget < 1 or args.seeds < 1:
        raise UsageError(f"need --budget >= 1 and --seeds >= 1; got {args.budget}, {args.seeds}")
    steps = Steps("search", enabled=not args.quiet)
    G, d, stored = _load(args)
    objective = search_objective(args, G, d)
    frames = {}
    if basis in ("none", "both"):
        frames["cma"] = {}
    if basis in ("global", "both"):
        lam, V = _eigenbasis(args, G, d, stored, steps)
        frames["cma-hessian"] = dict(eigvecs=V, eigvals=lam, power=args.power, cutoff=args.cutoff)
    out = {}
    with steps.over(len(frames) * args.seeds, f"CMA-ES run of {args.budget} evaluations") as step:
        for name, frame in frames.items():
            finals = []
            for s in range(args.seeds):
                finals.append(cma_search(objective, G.latent_dim, budget=args.budget, seed=s, sigma0=args.sigma0,
                                         popsize=args.popsize, **frame).value)
                step(f"{name} seed {s}: {finals[-1]:.4g}")
            out[name] = mean_sem(finals)
    print_json(indent=None, obj={"objective": args.objective, "generator": args.generator, "budget": args.budget,
                      "popsize": args.popsize, "sigma0": args.sigma0, "power": args.power,
                      "cutoff": args.cutoff, "metric": args.metric if "cma-hessian" in frames else None,
                      "methods": out})
    steps.finished()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``invert``/``search`` standalone (``python -m jobs.invert_cmd invert ...``)."""
    return run_module(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
