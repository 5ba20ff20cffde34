"""`gangeo rm`: delete a run from its store (a local directory or ``s3://``).

Example::

    gangeo rm quickstart --yes
    gangeo rm quickstart --store s3://bucket/runs --yes

Without ``--yes`` the command asks on a terminal and refuses otherwise (exit 2,
saying to pass ``--yes``). An unknown run, or a run a live driver is writing
(its lock, ARCHITECTURE.md "Store"), is refused with exit 5 and nothing is
deleted. While deleting, rm holds the run's lock itself, so no driver starts
writing the run meanwhile. The run is marked ``deleting`` before any key goes and
its own metadata goes last, so an rm cut short leaves a run that ``ls`` and
``status`` show as ``deleting``, that no command reads, and that a second ``rm``
finishes. Prints ``{"run", "store", "deleted": true}``.
"""

from __future__ import annotations

import argparse
import sys

from geometry_core.errors import UsageError
from jobs.command import run_module, store_args
from jobs.output import print_json

__all__ = ["add_parser", "delete_run", "main", "run_rm"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rm`` on a ``gangeo`` subparsers object."""

    p = subparsers.add_parser("rm", help="delete a run from the store (asks first unless --yes)")
    p.add_argument("run", help="run name")
    store_args(p)
    p.add_argument("--yes", action="store_true", help="delete without asking (needed when stdin is not a terminal)")
    p.set_defaults(func=run_rm)


def _refuse_live(run: str, info: dict | None) -> None:
    from cluster.lock import RunLockedError

    if info is not None:
        raise RunLockedError(f"run {run!r} is being written by a live driver (host {info.get('host')}, "
                             f"pid {info.get('pid')}); not deleted: stop it or wait for it to finish")


def _confirm(run: str, url: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"not deleting run {run!r} without confirmation: stdin is not a terminal; pass --yes")
    sys.stderr.write(f"delete run {run!r} from {url}? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError(f"run {run!r} not deleted (answered {answer!r}; type y to delete)")


def delete_run(rs, run: str) -> None:
    """Delete run ``run`` of the open store ``rs`` (:meth:`RunStore.delete_run`) while holding the run's lock."""
    from cluster.lock import RunLock

    with RunLock(rs.url, run, s3_endpoint=rs.s3_endpoint):  # RunLockedError if a driver just started
        rs.delete_run(run)


def run_rm(args: argparse.Namespace) -> int:
    """Check (the run exists, no live driver), confirm, delete; print the JSON result."""
    from cluster.run_state import live_driver
    from cluster.storage import StoreError
    from cluster.store import RunStore

    rs = RunStore(args.store, s3_endpoint=args.s3_endpoint, create=False)
    if not rs.has_run(args.run):
        names = [r["run"] for r in rs.ls()]
        raise StoreError(f"no run {args.run!r} in store {rs.url}; runs there: {names}")
    _refuse_live(args.run, live_driver(rs, args.run))
    _confirm(args.run, rs.url, args.yes)
    delete_run(rs, args.run)
    print_json({"run": args.run, "store": rs.url, "deleted": True}, indent=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m jobs.rm_cmd rm RUN``); ``gangeo`` registers the same parser."""
    return run_module(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
