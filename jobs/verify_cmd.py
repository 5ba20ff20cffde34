"""`gangeo verify RUN`: re-read every chunk of a run and report what is wrong, by group and chunk.

Example::

    gangeo verify quickstart --store ./gangeo-results
    gangeo verify nightly --store s3://bucket/runs --s3-endpoint http://127.0.0.1:9000 --rtol 1e-3

Prints the JSON report on stdout and one line per problem on stderr. Exit 0 when
the run is complete and intact, 1 when problems or unfinished chunks were found,
2 when the store or run cannot be read.
"""

from __future__ import annotations

import argparse
import sys

from jobs.command import store_args
from jobs.output import print_json

__all__ = ["add_parser", "cmd_verify"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``verify`` on a ``gangeo`` subparsers object."""
    from cluster.defaults import DEFAULT_STORE
    from cluster.verify import DEFAULT_RTOL

    p = subparsers.add_parser("verify", help="check every chunk of a run: data, done markers, checksums, PSD")
    p.add_argument("run")
    store_args(p, default=DEFAULT_STORE)
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                   help=f"tolerance relative to each chunk's scale (default {DEFAULT_RTOL})")
    p.add_argument("--group", action="append", default=None, help="only this group key (repeatable)")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from cluster.verify import verify_run

    report = verify_run(args.store, args.run, s3_endpoint=args.s3_endpoint, rtol=args.rtol, groups=args.group)
    print_json(report)
    for e in report["errors"]:
        where = f"chunk {e['chunk']}" if e["chunk"] is not None else "group"
        print(f"gangeo verify: {e['group']} {where}: {e['problem']}", file=sys.stderr)
    for key, g in report["groups"].items():
        if g["unfinished"] or g["missing"]:
            print(f"gangeo verify: {key}: chunks not done: unfinished {g['unfinished']}, missing {g['missing']}",
                  file=sys.stderr)
    return 0 if report["clean"] else 1
