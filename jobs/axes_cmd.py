"""`gangeo axes` and `gangeo localdim`: interpretable axes and local dimension from the command line.

Example::

    gangeo axes --generator dcgan-faces --distance mse --seed 0 --topk 5 --delta 0.05 --out axes/
    gangeo axes ... --directions ganspace.npy --sefa
    gangeo axes --generator dcgan-faces --metric run:quickstart --out axes/   # a stored run's global metric
    gangeo localdim --generator dcgan-faces --n 8 --layers main.2 main.5 image

`axes` writes ``axes_grid.png``, ``axes_curve.png``, ``axes.json`` and ``directions.npy``
(the traversed eigenvectors as rows, (topk, D)) into ``--out`` and prints the JSON summary
on stdout. The eigenframe is the metric at the code, or with ``--metric run:NAME[/group]``
the global metric a reduced run stored (:mod:`cluster.run_metric`). `localdim` prints a JSON table.
Errors: one line on stderr and the exit code of their kind (jobs.cli.EXIT_CODES), nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys

from geometry_core.errors import UsageError
from jobs.command import check_out_dir, run_module, store_args
from jobs.output import dumps_json, print_json

__all__ = ["DISTANCE_HELP", "add_parser", "main", "metric_args", "metric_distance", "run_axes", "run_localdim",
           "stored_metric"]

DEFAULTS = {"generator": "dcgan-faces", "distance": "mse", "seed": 0, "topk": 5, "delta": 0.05, "steps": 3}
DISTANCE_HELP = f"default: the distance of the --metric run's group, else {DEFAULTS['distance']}"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``axes`` and ``localdim`` on a ``gangeo`` subparsers object."""
    p = subparsers.add_parser("axes", help="traverse the top eigenvectors of the metric; align external directions")
    p.add_argument("--generator", default=DEFAULTS["generator"])
    p.add_argument("--space", default=None, help="latent space (default: the generator's first)")
    p.add_argument("--distance", default=None, help=DISTANCE_HELP)
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the reference code")
    p.add_argument("--topk", type=int, default=DEFAULTS["topk"])
    p.add_argument("--delta", type=float, default=DEFAULTS["delta"], help="distance per step")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="steps each side of the code")
    p.add_argument("--mode", choices=("linear", "spherical"), default="linear")
    p.add_argument("--method", default="exact", help="metric_tensor method")
    p.add_argument("--max-step", type=float, default=None, help="clip |t| of the calibrated steps")
    p.add_argument("--directions", default=None, help=".npy of (n, D) directions to align")
    p.add_argument("--sefa", action="store_true", help="also align SeFa's closed-form directions")
    p.add_argument("--out", required=True, help="output directory")
    metric_args(p, "the metric at the code")
    p.set_defaults(func=run_axes)

    q = subparsers.add_parser("localdim", help="local dimension per layer and Distortion")
    q.add_argument("--generator", default=DEFAULTS["generator"])
    q.add_argument("--space", default=None)
    q.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    q.add_argument("--n", type=int, default=4, help="number of codes")
    q.add_argument("--layers", nargs="*", default=None, help="layer names ('image' for the output)")
    q.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    q.add_argument("--distortion", action="store_true", help="also compute Distortion per layer")
    q.set_defaults(func=run_localdim)


def metric_args(p: argparse.ArgumentParser, default: str) -> None:
    """``--metric run:NAME[/group]`` and the store it is read from (``--store``, ``--s3-endpoint``)."""
    from cluster.defaults import DEFAULT_STORE

    p.add_argument("--metric", default=None, metavar="run:NAME[/GROUP]",
                   help=f"use the global metric of a reduced run in --store (default: {default})")
    store_args(p, default=DEFAULT_STORE)


def stored_metric(args: argparse.Namespace, G):
    """The stored global metric ``args.metric`` names (``run:...``), checked against ``G``; else None."""
    from cluster.run_metric import is_run_ref, load_run_metric

    if not is_run_ref(args.metric):
        return None
    stored = load_run_metric(args.metric, store=args.store, s3_endpoint=args.s3_endpoint, generator=args.generator,
                             space=args.space, dim=G.latent_dim, distance=args.distance)
    if stored.codes_not_done:  # a partial run's metric: say what it averages
        print(f"gangeo {args.command}: --metric {args.metric}: the global metric of {stored.key} averages "
              f"{stored.codes_used} of {stored.codes} codes ({stored.codes_not_done} in chunks not done)",
              file=sys.stderr)
    return stored


def metric_distance(args: argparse.Namespace, G, stored):
    """The distance the command measures with: ``--distance``, else the stored group's, else mse.

    With ``--metric run:...`` an explicit ``--distance`` must be the group's own (one line, exit 2):
    the stored eigenframe belongs to that distance.
    """
    from cluster.run_metric import check_distance
    from geometry_core import load_distance

    name = args.distance or (stored.target if stored is not None else DEFAULTS["distance"])
    d = load_distance(name, generator=G)
    if stored is not None and args.distance is not None:
        check_distance(args.metric, stored, d, generator=G)
    return d


def _load_directions(path: str, dim: int):
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read directions {path}: {err}") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != dim or not np.issubdtype(arr.dtype, np.floating):
        raise UsageError(f"directions {path}: expected a float array (n, {dim}), got {arr.dtype} {arr.shape}")
    return arr


def _alignment_summary(res: dict) -> list[dict]:
    return [
        {
            "power": float(res["power"][i]),
            "power_z": float(res["power_z"][i]),
            "rate": float(res["rate"][i]),
            "rate_z": float(res["rate_z"][i]),
            "aligned": res["aligned_indices"][i],
        }
        for i in range(len(res["aligned_indices"]))
    ]


def run_axes(args: argparse.Namespace) -> int:
    """Compute, then write the grid, the curve and ``axes.json``; print the JSON."""
    import numpy as np

    from geometry_core import eigen, load_generator, metric_tensor
    from geometry_core.alignment import alignment, sefa_directions
    from geometry_core.axes import explore_axes

    if args.topk < 1 or args.steps < 1 or not args.delta > 0:
        raise UsageError(f"need --topk >= 1, --steps >= 1, --delta > 0; got {args.topk}, {args.steps}, {args.delta}")
    check_out_dir(args.out)  # before any computing: a refused folder costs nothing
    if args.metric is not None and not args.metric.startswith("run:"):
        raise UsageError(f"--metric: expected run:NAME[/group], got {args.metric!r}")
    G = load_generator(args.generator, space=args.space)
    stored = stored_metric(args, G)  # before any computing: a refused metric costs nothing
    d = metric_distance(args, G, stored)
    directions = _load_directions(args.directions, G.latent_dim) if args.directions else None
    z = G.sample(1, seed=args.seed)[0]
    if stored is None:
        lam, U = eigen(metric_tensor(G, d, z, method=args.method).detach().cpu().double())
    else:
        lam, U = stored.eigvals, stored.eigvecs
    res = explore_axes(
        G, d, z, eigvals=lam, eigvecs=U, topk=args.topk, delta=args.delta,
        n_steps=args.steps, mode=args.mode, max_step=args.max_step,
    )
    summary = {
        "generator": args.generator, "distance": d.name, "seed": args.seed, "mode": args.mode,
        "topk": args.topk, "delta": args.delta,
        "metric": "local" if stored is None else stored.describe(),
        "eigvals_top": lam[: args.topk].tolist(),
        "steps": res["steps"].tolist(), "target": res["target"].tolist(), "measured": res["measured"].tolist(),
    }
    if directions is not None:
        summary["alignment"] = _alignment_summary(alignment(directions, U, lam, topk=args.topk, seed=args.seed))
    if args.sefa:
        _, sefa_vecs = sefa_directions(G)
        summary["sefa_alignment"] = _alignment_summary(
            alignment(sefa_vecs[:, : args.topk].T, U, lam, topk=args.topk, seed=args.seed)
        )
    from geometry_core.axes import save_grid
    from geometry_core.plots import plot_distance_curve

    os.makedirs(args.out, exist_ok=True)
    summary["directions_npy"] = os.path.join(args.out, "directions.npy")
    np.save(summary["directions_npy"], U[:, : args.topk].T.numpy())
    summary["grid_png"] = save_grid(res["images"], os.path.join(args.out, "axes_grid.png"))
    summary["curve_png"] = plot_distance_curve(
        res["target"].numpy(), res["measured"].numpy(), os.path.join(args.out, "axes_curve.png"),
        title=f"{args.generator} / {d.name}, {args.mode}",
    )
    with open(os.path.join(args.out, "axes.json"), "w") as fh:
        fh.write(dumps_json(summary, indent=1))
    print_json(summary, indent=None)
    return 0


def run_localdim(args: argparse.Namespace) -> int:
    """Print ``{layer: {dims, mean, median, min, max, shape[, distortion]}}`` as JSON."""
    from cluster.progress import Steps
    from geometry_core import load_generator
    from geometry_core.local_dim import distortion, local_dimension_table

    if args.n < 2 and args.distortion:
        raise UsageError(f"--distortion needs --n >= 2, got {args.n}")
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    steps = Steps("localdim", enabled=not args.quiet)
    G = load_generator(args.generator, space=args.space)
    names = args.layers if args.layers else list(G.layer_names) + ["image"]
    layers = [None if n == "image" else n for n in names]
    for layer in layers:
        if layer is not None:
            G.layer(layer)
    zs = G.sample(args.n, seed=args.seed)
    steps.say(f"local dimension of {args.n} codes at {len(names)} layers")
    table = local_dimension_table(G, zs, layers)
    out = {("image" if k is None else k): v for k, v in table.items()}
    if args.distortion:
        with steps.over(len(names), "distortion of layer") as step:
            for name, layer in zip(names, layers):
                out[name]["distortion"] = distortion(G, zs, layer)["distortion"]
                step(name)
    print_json(out, indent=None)
    steps.finished()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m jobs.axes_cmd axes ...``); ``gangeo`` registers the same parsers."""
    return run_module(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
