"""`gangeo reduce RUN`: run the reducers of a sweep from what its store holds.

Example::

    gangeo reduce quickstart --store ./gangeo-results
    gangeo reduce nightly --store s3://bucket/runs --address ray://head:10001

Prints one JSON object (per target group: codes used, top global eigenvalues,
anisotropy counts, homogeneity mean and std; with Ray, ``reduce_nodes``: tasks per
Ray node) on stdout.
"""

from __future__ import annotations

import argparse
import sys

from jobs.command import store_args
from jobs.output import print_json

__all__ = ["REDUCERS_HELP", "TILE", "add_parser", "run_reduce"]

TILE = 64  # cluster.reduce.DEFAULT_TILE, written here so `-h` imports no torch (a test checks they agree)
MAX_BLOCKS = 40  # cluster.reduce.MAX_BLOCKS, likewise
REDUCERS_HELP = "global metric, homogeneity and anisotropy"  # the titles of cluster.reduce.REDUCER_TABLE


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``reduce RUN [--store URL] [--s3-endpoint URL] [--address ADDR] [--tile N] [--no-ray]``."""
    from cluster.defaults import DEFAULT_STORE

    # Written out, not read from cluster.reduce.REDUCER_TABLE: `-h` imports no torch (a test checks they agree).
    p = subparsers.add_parser("reduce", help=f"{REDUCERS_HELP} of a run, from the store")
    p.add_argument("run", help="run name in the store")
    store_args(p, default=DEFAULT_STORE)
    from cluster.ray_runtime import CLUSTER_ADDRESS_HELP

    p.add_argument("--address", default=None, metavar="CLUSTER", help=CLUSTER_ADDRESS_HELP)
    p.add_argument("--tile", type=int, default=None,
                   help=f"codes per homogeneity tile (default {TILE}; larger past {TILE * MAX_BLOCKS:,} codes, "
                        f"so that there are at most {MAX_BLOCKS * (MAX_BLOCKS + 1) // 2} tile tasks)")
    p.add_argument("--no-ray", action="store_true", help="compute in this process, without Ray")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--skip-damaged", action="store_true",
                   help="leave out done chunks whose data fails its checksum (default: refuse)")
    p.set_defaults(func=run_reduce)
    return p


def run_reduce(args: argparse.Namespace) -> int:
    """Reduce the run and print its summary as JSON."""
    from cluster.executor import executor
    from cluster.lock import RunLock
    from cluster.ray_runtime import check_cluster_address
    from cluster.reduce import reduce_run
    from cluster.view import open_run

    check_cluster_address(args.address if not args.no_ray else None)  # a job server URL: one line, exit 9
    open_run(args.store, args.run, s3_endpoint=args.s3_endpoint)  # an absent run: refused before any lock is written
    # The run's lock, as a driver holds it: no reduce while chunks are written, no `rm` while it reduces.
    ex = executor(not args.no_ray)
    with RunLock(args.store, args.run, s3_endpoint=args.s3_endpoint):
        summary = reduce_run(args.store, args.run, s3_endpoint=args.s3_endpoint, address=args.address,
                             tile=args.tile, use_ray=not args.no_ray, ex=ex,
                             progress=not args.quiet and sys.stderr.isatty(), skip_damaged=args.skip_damaged)
    skipped = sum(len(g.get("damaged_skipped", [])) for g in summary.values())
    if skipped:
        print(f"gangeo reduce: skipped {skipped} damaged chunks", file=sys.stderr)
    out = {"run": args.run, "store": str(args.store), "groups": summary}
    if ex.placement:
        out["reduce_nodes"] = ex.placement  # Ray node id -> tasks that ran there
    print_json(out)
    return 0
