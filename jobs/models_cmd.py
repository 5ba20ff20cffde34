"""`gangeo models`: the catalogue of published weights, and pre-fetching it.

Example::

    gangeo models --format table                 # name, architecture, spaces, cached?, how checked
    gangeo models fetch pggan-celebahq-256 biggan-deep-256
    GANGEO_HOME=./weights gangeo models fetch --all   # then ship ./weights to workers without internet

Listing prints JSON (or a table) on stdout; fetching prints one JSON record per
entry on stdout, download progress on stderr. Errors: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.output import print_json

__all__ = ["add_parser", "cmd_fetch", "cmd_list"]

FORMATS = ("json", "table")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``models [--format F]`` and ``models fetch NAME... | --all``."""
    p = subparsers.add_parser("models", help="published weights: the catalogue, what is cached, how it is checked",
                              usage="gangeo models [-h] [--format {json,table}] [fetch ...]")
    p.add_argument("--format", choices=FORMATS, default="json")
    p.set_defaults(func=cmd_list)
    # prog: argparse would otherwise build `fetch`'s usage line from this parser's whole usage string.
    actions = p.add_subparsers(dest="models_action", metavar="ACTION", prog="gangeo models")
    f = actions.add_parser("fetch", help="download and verify catalogue entries into the cache ($GANGEO_HOME)")
    f.add_argument("names", nargs="*", metavar="NAME", help="catalogue entries (see `gangeo models`)")
    f.add_argument("--all", action="store_true", help="every catalogue entry")
    f.set_defaults(func=cmd_fetch)


def _table(rows: list[dict]) -> str:
    head = ("NAME", "ARCH", "SPACES", "RES", "CACHED", "CHECK", "PATH")
    lines = [head]
    for r in rows:
        spaces = ",".join(f"{s}:{d}" for s, d in r["spaces"].items())
        checks = "; ".join(dict.fromkeys(f["check"] for f in r["files"]))
        paths = [f["path"] for f in r["files"]]
        where = "-" if not r["cached"] else paths[0] if len(paths) == 1 else str(Path(paths[0]).parent)
        cached = "yes" if r["cached"] else "no"
        lines.append((r["name"], r["arch"], spaces, str(r["resolution"]), cached, checks, where))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(line, widths)), line[-1]]) for line in lines)


def cmd_list(args: argparse.Namespace) -> int:
    from geometry_core.generators.catalog import CATALOG, entry_status
    from geometry_core.weights_cache import cache_home

    rows = [entry_status(name) for name in CATALOG]
    if args.format == "table":
        print(_table(rows))
    else:
        print_json({"cache": str(cache_home()), "models": rows})
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from geometry_core.errors import UsageError
    from geometry_core.generators.catalog import CATALOG, entry_status, fetch_entry, get_entry

    if bool(args.names) == bool(args.all):
        raise UsageError("fetch: give catalogue names, or --all (not both)")
    names = list(CATALOG) if args.all else list(dict.fromkeys(args.names))
    for name in names:
        get_entry(name)  # every name checked before any download
    for name in names:
        fetch_entry(name)
        print_json(entry_status(name), indent=None, flush=True)
    return 0
