"""`gangeo compare`: two complete, reduced runs side by side (JSON on stdout, optionally an HTML page).

Example::

    gangeo compare trained shuffled
    gangeo compare seed0 seed1 --group dcgan-faces/z/mse --report cmp/

Per matching group: the median spectrum and the global metric's spectrum, anisotropy
(median over codes, and of the global metric) and homogeneity, for each run
(:mod:`cluster.compare`). The JSON is strict (null where a value is absent or not
finite). A run that is not complete and reduced is refused (exit 5), an unknown
``--group`` or runs without a matching group too (exit 2); nothing is written then.
"""

from __future__ import annotations

import argparse
import sys

from jobs.command import run_module, store_args
from jobs.output import print_json

__all__ = ["add_parser", "main", "run_compare"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``compare`` on a ``gangeo`` subparsers object."""
    from cluster.defaults import DEFAULT_STORE

    p = subparsers.add_parser("compare", help="two reduced runs side by side: spectra, anisotropy, homogeneity (JSON)")
    p.add_argument("run_a", metavar="RUN_A", help="first run (A)")
    p.add_argument("run_b", metavar="RUN_B", help="second run (B)")
    store_args(p, default=DEFAULT_STORE)
    p.add_argument("--group", default=None,
                   help="compare only this group: <model>/<space>/<target> of either run, or <space>/<target>")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="also write DIR/compare-RUN_A-RUN_B.html with the figures side by side")
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Check both names and --report, compare, print strict JSON."""
    import os

    from cluster.compare import compare_runs
    from cluster.spec import check_run_name
    from geometry_core.errors import UsageError, clip

    for run in (args.run_a, args.run_b):
        check_run_name(run)
    if args.report is not None and os.path.exists(args.report) and not os.path.isdir(args.report):
        raise UsageError(f"--report {clip(args.report, bare=True)}: exists and is not a directory")
    out = compare_runs(args.store, args.run_a, args.run_b, group=args.group, s3_endpoint=args.s3_endpoint,
                       report_dir=args.report)
    missing = sum(g[side]["codes_not_done"] for g in out["groups"] for side in ("a", "b"))
    if missing:  # left out of every statistic: say so once
        print(f"gangeo compare: left out {missing} codes whose chunk is not done", file=sys.stderr)
    print_json(out, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m jobs.compare_cmd compare A B``); ``gangeo`` registers the same parser."""
    return run_module(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
