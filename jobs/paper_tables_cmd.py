"""`gangeo paper-tables`: Tables 2, 3 and 5 of Wang & Ponce (ICLR 2021) on catalogue generators.

Example::

    gangeo paper-tables --generator dcgan-faces --n 40 --seed 0 --format table
    python bench/paper_tables.py --n 20          # the same, saved to bench/results/paper_tables.json

For each generator, ``n`` codes ``G.sample(n, seed=seed)`` and one metric per code
and distance (``--reference``, the paper's LPIPS, and each of ``--compare``),
computed by ``metric_tensor(method=--method, dtype=--dtype)`` and decomposed in
float64. What each table holds (ARCHITECTURE.md, "Paper tables"):

- Table 2 (anisotropy): for f in 0.99 ... 0.99999, the fewest top eigenvalues
  whose sum reaches f of the total (``spectrum.anisotropy``), of the mean
  spectrum over codes (``mean_spectrum``) and per code (``per_code``: mean, std).
- Table 3 (homogeneity): mean and std of the off-diagonal entries of
  ``homogeneity(H)`` on the log and the linear scale.
- Table 5 (robustness to the distance), per code ``b``, each compared distance
  ``X`` against the reference ``R``; then mean and std (Bessel) over codes:
  ``h_corr`` Pearson correlation of the D*D entries of ``H_X`` and ``H_R``;
  ``eig_corr`` Pearson correlation of their eigenvalues (linear scale; also
  ``eig_corr_log`` on log10); ``sim_log`` / ``sim_lin`` the homogeneity statistic
  across distances: ``v_k = u_k^T H_X u_k`` with ``u_k`` the eigenvectors of
  ``H_R``, correlated with the eigenvalues of ``H_X`` (log10 / linear);
  ``slope`` / ``intercept`` of the least-squares line
  ``log10 eig_X = slope * log10 eig_R + intercept`` over the D ranks.
  Non-positive eigenvalues (round-off) are left out of every log statistic.
  The paper's column headers were lost: its six columns are read as h_corr,
  eig_corr, the two similarity statistics (order unknown), slope, intercept.

Prints one JSON object on stdout (``--format table``: a readable table instead);
progress goes to stderr. Errors: one line on stderr, the exit code of their kind (jobs.cli.EXIT_CODES).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from jobs.command import run_module
from jobs.output import dumps_json

if TYPE_CHECKING:  # annotations only: torch is imported lazily so `gangeo -h` stays light
    import torch

__all__ = ["DEFAULTS", "add_parser", "format_table", "main", "paper_tables", "table2", "table3", "table5"]

DEFAULTS = {
    "generators": ["dcgan-faces"], "n": 20, "seed": 0, "reference": "lpips-alex", "compare": ["mse", "ssim"],
    "method": "exact", "dtype": "float32", "batch": 4,
}
# Metrics in float32 by default (dcgan-faces on CPU: ~0.3 s per code and distance, against
# ~7 s in float64) and always decomposed in float64; --dtype float64 also removes float32
# round-off of H itself (~1e-7 of the top eigenvalue) from the bottom of the spectrum.
_DTYPES = ("float32", "float64")  # torch dtypes by name; torch is imported when tables are computed


# --- the statistics, on metric stacks (N, D, D) --------------------------------------------


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    from geometry_core.homogeneity import pearson

    return float(pearson(x.double(), y.double()))


def _mean_std(values: list[float]) -> dict:
    import torch

    t = torch.tensor(values, dtype=torch.float64)
    t = t[torch.isfinite(t)]
    std = float(t.std()) if t.numel() > 1 else float("nan")
    return {"mean": float(t.mean()) if t.numel() else float("nan"), "std": std}


def table2(eigvals: torch.Tensor) -> dict:
    """Anisotropy of the mean spectrum and per code (mean, std), keyed by fraction as a string."""
    from geometry_core.spectrum import anisotropy

    mean_counts = anisotropy(eigvals.mean(dim=0))
    per_code = anisotropy(eigvals)
    return {
        "mean_spectrum": {str(f): int(k) for f, k in mean_counts.items()},
        "per_code": {str(f): _mean_std(k.double().tolist()) for f, k in per_code.items()},
    }


def table3(H: torch.Tensor, eigvals: torch.Tensor, eigvecs: torch.Tensor) -> dict:
    """Homogeneity summaries ``{"log": {mean, std}, "lin": {mean, std}}`` of a stack (N >= 2)."""
    from geometry_core.homogeneity import homogeneity, homogeneity_summary

    corr_log, corr_lin = homogeneity(H, eigvals=eigvals, eigvecs=eigvecs)
    out = {}
    for key, corr in (("log", corr_log), ("lin", corr_lin)):
        mean, std = homogeneity_summary(corr)
        out[key] = {"mean": mean, "std": std}
    return out


def _compare_one(H_r, L_r, U_r, H_x, L_x) -> dict:
    """Table 5's statistics for one code: reference (H_r, L_r, U_r) against (H_x, L_x)."""
    from geometry_core.homogeneity import homogeneity_tile

    sim_log, sim_lin, _ = homogeneity_tile(U_r[None], H_x[None], L_x[None])
    pos = (L_r > 0) & (L_x > 0)
    x, y = L_r[pos].log10(), L_x[pos].log10()
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / xc.pow(2).sum()) if pos.sum() >= 2 else float("nan")
    return {
        "h_corr": _pearson(H_x.flatten(), H_r.flatten()),
        "eig_corr": _pearson(L_x, L_r),
        "eig_corr_log": _pearson(y, x),
        "sim_log": float(sim_log[0, 0]),
        "sim_lin": float(sim_lin[0, 0]),
        "slope": slope,
        "intercept": float(y.mean() - slope * x.mean()),
    }


def table5(ref: tuple, other: tuple) -> dict:
    """``ref`` and ``other`` are ``(H, eigvals, eigvecs)`` stacks over the same codes.

    Returns ``{statistic: {"mean", "std", "per_code": [...]}}``, see the module doc.
    """
    rows = [_compare_one(ref[0][b], ref[1][b], ref[2][b], other[0][b], other[1][b]) for b in range(ref[0].shape[0])]
    return {key: {**_mean_std([r[key] for r in rows]), "per_code": [r[key] for r in rows]} for key in rows[0]}


# --- computing the metrics -------------------------------------------------------------------


def _metrics(G, distance, z, *, method: str, dtype: torch.dtype, batch: int) -> torch.Tensor:
    from geometry_core.metric import metric_tensor

    parts = [metric_tensor(G, distance, z[i : i + batch], method=method, dtype=dtype) for i in range(0, len(z), batch)]
    import torch

    return torch.cat(parts).double().cpu()


def _eigen64(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from geometry_core.spectrum import eigen

    return eigen(H.double())


def paper_tables(
    generator: str,
    *,
    n: int = DEFAULTS["n"],
    seed: int = DEFAULTS["seed"],
    reference: str = DEFAULTS["reference"],
    compare: tuple[str, ...] = tuple(DEFAULTS["compare"]),
    method: str = DEFAULTS["method"],
    dtype: str = DEFAULTS["dtype"],
    batch: int = DEFAULTS["batch"],
    random_backbone: bool = False,
    log=print,
) -> dict:
    """Tables 2, 3 (every distance) and 5 (each of ``compare`` against ``reference``) for one generator."""
    import torch

    from geometry_core.distances import load_distance
    from geometry_core.errors import GeometryError
    from geometry_core.generators import load_generator

    if not isinstance(n, int) or n < 2:
        raise GeometryError(f"paper-tables: n must be an int >= 2 (homogeneity needs pairs), got {n!r}")
    if dtype not in _DTYPES:
        raise GeometryError(f"paper-tables: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    G = load_generator(generator)
    z = G.sample(n, seed=seed)
    out = {"latent_dim": G.latent_dim, "seconds": {}, "table2": {}, "table3": {}, "table5": {}}
    stacks = {}
    for name in dict.fromkeys((reference, *compare)):
        opts = {"pretrained_backbone": False} if random_backbone and name.startswith("lpips") else {}
        d = load_distance(name, generator=G, device=G.device, **opts)
        t0 = time.perf_counter()
        H = _metrics(G, d, z, method=method, dtype=getattr(torch, dtype), batch=batch)
        out["seconds"][name] = round(time.perf_counter() - t0, 2)
        log(f"paper-tables: {generator} {name}: {n} metrics in {out['seconds'][name]:.1f} s")
        L, U = _eigen64(H)
        stacks[name] = (H, L, U)
        out["table2"][name] = table2(L)
        out["table3"][name] = table3(H, L, U)
    for name in compare:
        if name != reference:
            out["table5"][name] = table5(stacks[reference], stacks[name])
    return out


def run_all(args) -> dict:
    """The JSON document for ``args`` (generators, n, seed, ...): settings, then one entry per generator."""
    settings = {
        "paper": "Wang & Ponce, A Geometric Analysis of Deep Generative Image Models (ICLR 2021)",
        "n": args.n, "seed": args.seed, "reference": args.reference, "compare": list(args.compare),
        "method": args.method, "dtype": args.dtype,
        "lpips_backbone": "random (code path only)" if args.random_backbone else "trained",
    }
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    gens = {
        g: paper_tables(g, n=args.n, seed=args.seed, reference=args.reference, compare=tuple(args.compare),
                        method=args.method, dtype=args.dtype, batch=args.batch,
                        random_backbone=args.random_backbone, log=log)
        for g in dict.fromkeys(args.generator)
    }
    return {"settings": settings, "generators": gens}


def _ms(d: dict, digits: int = 3) -> str:
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def format_table(result: dict) -> str:
    """The three tables as plain text, one block per table."""
    s = result["settings"]
    lines = [f"codes: n={s['n']} seed={s['seed']}  method={s['method']} {s['dtype']}  LPIPS backbone: "
             f"{s['lpips_backbone']}"]
    lines += ["", "Table 2: eigenvalues for a fraction of the mean spectrum (per code: mean ± std)"]
    fractions = next((list(t["mean_spectrum"]) for r in result["generators"].values()
                      for t in r["table2"].values()), [])
    lines.append(f"  {'generator':<14} {'distance':<14} {'D':<7} " + " | ".join(f"fraction {f}" for f in fractions))
    for g, r in result["generators"].items():
        for name, t in r["table2"].items():
            cells = [f"{t['mean_spectrum'][f]} ({_ms(t['per_code'][f], 1)})" for f in t["mean_spectrum"]]
            lines.append(f"  {g:<14} {name:<14} D={r['latent_dim']:<5} " + " | ".join(cells))
    lines += ["", "Table 3: homogeneity, log and linear (mean ± std over ordered pairs)"]
    lines.append(f"  {'generator':<14} {'distance':<14} log / lin")
    for g, r in result["generators"].items():
        for name, t in r["table3"].items():
            lines.append(f"  {g:<14} {name:<14} log {_ms(t['log'])}   lin {_ms(t['lin'])}")
    lines += ["", f"Table 5: each distance against {s['reference']} (mean ± std over codes)"]
    keys = ("h_corr", "eig_corr", "sim_log", "sim_lin", "slope", "intercept")
    lines.append(f"  {'generator':<14} {'distance':<14} " + " | ".join(f"{k:<13}" for k in keys))
    for g, r in result["generators"].items():
        for name, t in r["table5"].items():
            lines.append(f"  {g:<14} {name:<14} " + " | ".join(f"{_ms(t[k]):<13}" for k in keys))
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``paper-tables`` on a ``gangeo`` subparsers object."""
    p = subparsers.add_parser("paper-tables", help="the paper's Tables 2, 3 and 5 on catalogue generators (JSON)")
    p.add_argument("--generator", nargs="+", default=DEFAULTS["generators"], help="catalogue generator names")
    p.add_argument("--n", type=int, default=DEFAULTS["n"], help="number of codes")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the codes")
    p.add_argument("--reference", default=DEFAULTS["reference"], help="the paper's distance (Table 5's reference)")
    p.add_argument("--compare", nargs="+", default=DEFAULTS["compare"], help="distances compared with it")
    p.add_argument("--method", default=DEFAULTS["method"], help="metric_tensor method")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default=DEFAULTS["dtype"])
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"], help="codes per metric_tensor call")
    p.add_argument("--random-backbone", action="store_true",
                   help="LPIPS with a random trunk: checks the code path only, not the paper's figures")
    p.add_argument("--format", choices=("json", "table"), default="json")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geometry_core.errors import UsageError

    if args.batch < 1:
        raise UsageError(f"--batch must be a positive int, got {args.batch}")
    result = run_all(args)
    text = dumps_json(result, indent=1)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(format_table(result) if args.format == "table" else text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m jobs.paper_tables_cmd ...``); ``gangeo`` registers the same parser."""
    return run_module(add_parser, ["paper-tables", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
