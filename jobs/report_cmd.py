"""`gangeo report RUN`: write the run's self-contained HTML report and its figures.

Example::

    gangeo report quickstart --store ./gangeo-results --out report/
    gangeo report nightly --store s3://bucket/runs --s3-endpoint http://127.0.0.1:9000

Prints the HTML file's path on stdout; a progress bar over the figures goes to
stderr on a terminal (none with ``--quiet``).
"""

from __future__ import annotations

import argparse
import sys

from jobs.command import allow_import_arg, store_args

__all__ = ["add_parser", "run_report"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``report RUN [--store URL] [--s3-endpoint URL] [--out DIR] [--no-traversals] [--quiet]``."""
    from cluster.defaults import DEFAULT_STORE
    from cluster.report_html import DEFAULT_REPORT_DIR

    p = subparsers.add_parser("report", help="self-contained HTML report of a run (figures also as PNG files)")
    p.add_argument("run", help="run name in the store")
    store_args(p, default=DEFAULT_STORE)
    p.add_argument("--out", default=None, help=f"output directory (default {DEFAULT_REPORT_DIR}/RUN)")
    p.add_argument("--no-traversals", action="store_true",
                   help="skip traversal grids (they load the run's generator here)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    allow_import_arg(p)
    p.add_argument("--skip-damaged", action="store_true",
                   help="leave out done chunks whose data fails its checksum (default: refuse)")
    p.set_defaults(func=run_report)
    return p


def run_report(args: argparse.Namespace) -> int:
    """Build the report and print its path (on an error nothing is written)."""
    from pathlib import Path

    from cluster.report import build_report
    from geometry_core.errors import UsageError, clip

    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {clip(args.out, bare=True)}: exists and is not a directory; "
                         "expected a directory for the report")
    counts: dict = {}
    path = build_report(args.store, args.run, out_dir=args.out, s3_endpoint=args.s3_endpoint,
                        progress=not args.quiet, traversals=not args.no_traversals, allow_import=args.allow_import,
                        skip_damaged=args.skip_damaged, counts=counts)
    said = ([f"skipped {counts['damaged']} damaged chunks"] if counts.get("damaged") else []) + (
        [f"left out {counts['not_done']} of {counts['codes']} codes whose chunk is not done"]
        if counts.get("not_done") else [])
    if said:  # one line: what the report does not show
        print(f"gangeo report: {'; '.join(said)}", file=sys.stderr)
    print(path)
    return 0
